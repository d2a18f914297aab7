"""The one HTTP seam: URLs from the configured base only, credentials only to the provider."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from predictions.client import Provider, ProviderClient, ProviderError, ProviderNotConfigured

from .conftest import configure_provider


class RecordingServer:
    """A local HTTP server that records each request and answers with a canned response."""

    def __init__(self, status: int = 200, body: object = None, headers: dict | None = None):
        self.requests: list[dict] = []
        self.status, self.body, self.headers = status, body, headers or {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.answer()

            def do_POST(self) -> None:
                self.answer()

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                    }
                )
                payload = recorder.body
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(recorder.status)
                for name, value in recorder.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recording():
    servers: list[RecordingServer] = []

    def start(*args, **kwargs) -> RecordingServer:
        servers.append(RecordingServer(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def provider_at(url: str) -> Provider:
    return Provider("cometapi", "CometAPI", f"{url}/replicate/v1", "sk-secret")


PREDICTION = {"id": "abc123", "status": "starting"}


def test_a_create_posts_the_input_under_the_configured_base_with_the_key(recording):
    server = recording(201, PREDICTION)

    ProviderClient().create(provider_at(server.url), "black-forest-labs/flux-schnell", {"a": 1})

    [request] = server.requests
    assert request["method"] == "POST"
    assert request["path"] == "/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    assert request["headers"]["Authorization"] == "Bearer sk-secret"
    assert json.loads(request["body"]) == {"input": {"a": 1}}


def test_get_and_cancel_build_their_paths_from_the_id(recording):
    server = recording(200, PREDICTION)
    client, provider = ProviderClient(), provider_at(server.url)

    client.get(provider, "abc123")
    client.cancel(provider, "abc123")

    assert [(r["method"], r["path"]) for r in server.requests] == [
        ("GET", "/replicate/v1/predictions/abc123"),
        ("POST", "/replicate/v1/predictions/abc123/cancel"),
    ]


@pytest.mark.parametrize("bad_id", ["", "../models", "abc/cancel", "a b", "x?y=1", "é"])
def test_an_invalid_prediction_id_is_refused_before_any_request(recording, bad_id):
    server = recording(200, PREDICTION)

    with pytest.raises(ValueError):
        ProviderClient().get(provider_at(server.url), bad_id)
    assert server.requests == []


@pytest.mark.parametrize("bad_model", ["flux", "a/b/c", "../x/y", "/name", "owner/", "a b/c"])
def test_a_model_not_in_owner_name_form_is_refused_before_any_request(recording, bad_model):
    server = recording(201, PREDICTION)

    with pytest.raises(ValueError, match="owner/name"):
        ProviderClient().create(provider_at(server.url), bad_model, {})
    assert server.requests == []


def test_a_redirect_is_not_followed_so_the_key_goes_nowhere_else(recording):
    elsewhere = recording(200, PREDICTION)
    server = recording(302, b"", {"Location": f"{elsewhere.url}/steal"})

    with pytest.raises(ProviderError, match="redirect"):
        ProviderClient().get(provider_at(server.url), "abc123")
    assert elsewhere.requests == []


def test_a_rate_limit_is_retryable_provably_unapplied_and_carries_retry_after(recording):
    server = recording(429, {"detail": "throttled"}, {"Retry-After": "12"})

    with pytest.raises(ProviderError) as caught:
        ProviderClient().create(provider_at(server.url), "a/b", {})

    assert caught.value.retryable
    assert not caught.value.maybe_applied
    assert caught.value.retry_after == 12


def test_a_server_error_is_retryable_but_may_have_been_applied(recording):
    server = recording(502, b"<html>Bad gateway</html>")

    with pytest.raises(ProviderError) as caught:
        ProviderClient().create(provider_at(server.url), "a/b", {})

    assert caught.value.retryable
    assert caught.value.maybe_applied
    assert caught.value.status == 502


def test_a_refusal_is_permanent_and_quotes_the_provider(recording):
    detail = "- input.num_outputs: Must be less than or equal to 4"
    server = recording(422, {"title": "Input validation failed", "detail": detail})

    with pytest.raises(ProviderError) as caught:
        ProviderClient().create(provider_at(server.url), "a/b", {})

    assert not caught.value.retryable
    assert detail in caught.value.message


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"status": "ok"}', b'{"id": "../x"}'])
def test_a_response_that_is_not_a_prediction_is_retryable(recording, body):
    server = recording(200, body)

    with pytest.raises(ProviderError, match="not a prediction") as caught:
        ProviderClient().get(provider_at(server.url), "abc123")
    assert caught.value.retryable


def test_a_closed_port_is_a_connect_error_that_provably_sent_nothing(recording):
    server = recording()
    server.close()

    with pytest.raises(ProviderError, match="Could not connect") as caught:
        ProviderClient().create(provider_at(server.url), "a/b", {})
    assert caught.value.retryable
    assert not caught.value.maybe_applied


def test_a_slow_answer_times_out_and_may_have_been_applied(settings, simulator):
    settings.PROVIDER_READ_TIMEOUT = 0.3
    simulator.faults.stall_rate = 1.0
    provider = Provider("simulator", "Demo", simulator.base_url, "demo")

    with pytest.raises(ProviderError, match="did not answer in time") as caught:
        ProviderClient().create(provider, "black-forest-labs/flux-schnell", {"prompt": "x"})
    assert caught.value.maybe_applied


def test_an_unknown_provider_or_a_missing_key_says_what_to_do(settings):
    configure_provider(settings, "cometapi", token="")

    with pytest.raises(ProviderNotConfigured, match="Unknown provider 'openai'"):
        Provider.named("openai")
    with pytest.raises(ProviderNotConfigured, match="set COMETAPI_KEY"):
        Provider.named("cometapi")
