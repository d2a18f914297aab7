"""The one module that talks to prediction providers.

Every provider speaks the Replicate prediction API under its own base URL. URLs are always built
from the configured base with validated path parts, redirects are never followed, and URLs found
in provider JSON (`urls.get` points at Replicate even on CometAPI) are never requested, so a
provider's credentials are only ever sent to that provider.
"""

import email.utils
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from operations import tallies

from .budget import RequestBudget

MODEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}/[a-z0-9][a-z0-9._-]{0,99}", re.IGNORECASE)
PREDICTION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Pages of the account's predictions (Replicate's are 100 long) that `list()` reads at most.
LIST_PAGES = 10
USER_AGENT = "Darkroom/0.1 (+https://github.com/darkroom)"


class ProviderError(Exception):
    """A request to a provider that did not return a usable prediction.

    `retryable` says whether the same request may succeed later. `maybe_applied` says whether
    the provider may have acted on it anyway (a lost response), which decides whether a paid
    create may be sent again: only when it is False.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        maybe_applied: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.maybe_applied = maybe_applied
        self.status = status
        self.retry_after = retry_after


class ProviderNotConfigured(ValueError):
    """An unknown provider name, or a provider without its key."""


@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    base_url: str
    token: str

    @classmethod
    def named(cls, name: str, token: str | None = None) -> "Provider":
        """The configured provider `name`, with `token` (a team's key) or the deployment's."""
        config = settings.PROVIDERS.get(name)
        if config is None:
            choices = ", ".join(settings.PROVIDERS)
            raise ProviderNotConfigured(f"Unknown provider {name!r}: choose one of {choices}.")
        token = token or config["token"]
        if not token:
            raise ProviderNotConfigured(
                f"{config['label']} has no API key: a team owner can add one under Provider "
                f"keys, or the deployment can set {config['key_variable']}."
            )
        return cls(name, config["label"], config["base_url"].rstrip("/"), token)

    def __repr__(self) -> str:
        # Never show the token, in logs, tracebacks or the debugger.
        return f"Provider({self.name!r}, {self.base_url!r})"


def provider_label(name: str) -> str:
    """How people call the provider `name`: its configured label, else the name itself."""
    return settings.PROVIDERS.get(name, {}).get("label", name)


def validate_model(model: str) -> tuple[str, str]:
    if not MODEL_RE.fullmatch(model):
        raise ValueError(f"{model!r} is not a model name of the form owner/name.")
    owner, name = model.split("/")
    return owner, name


def validate_prediction_id(prediction_id: str) -> str:
    if not PREDICTION_ID_RE.fullmatch(prediction_id or ""):
        raise ValueError(f"{prediction_id!r} is not a valid prediction id.")
    return prediction_id


class ProviderClient:
    """create / get / cancel over one pooled HTTP transport.

    Requests go straight to httpx's transport: a poll needs none of `httpx.Client`'s cookies,
    auth flows, redirects or event hooks, and skipping them saves about a third of the CPU of
    every request, which is most of what a poll costs.
    """

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self.transport = transport or httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=50)
        )
        self.timeout = httpx.Timeout(
            connect=settings.PROVIDER_CONNECT_TIMEOUT,
            read=settings.PROVIDER_READ_TIMEOUT,
            write=10.0,
            pool=10.0,
        ).as_dict()

    def create(
        self, provider: Provider, model: str, input: dict[str, Any], webhook: str | None = None
    ) -> dict[str, Any]:
        """Start a prediction; with `webhook`, the provider also posts it there when it starts
        and when it ends."""
        owner, name = validate_model(model)
        path = f"/models/{owner}/{name}/predictions"
        body: dict[str, Any] = {"input": input}
        if webhook:
            body |= {"webhook": webhook, "webhook_events_filter": ["start", "completed"]}
        return self._request(provider, "POST", path, json=body)

    def get(self, provider: Provider, prediction_id: str) -> dict[str, Any]:
        path = f"/predictions/{validate_prediction_id(prediction_id)}"
        return self._request(provider, "GET", path)

    def cancel(self, provider: Provider, prediction_id: str) -> dict[str, Any]:
        path = f"/predictions/{validate_prediction_id(prediction_id)}/cancel"
        return self._request(provider, "POST", path)

    def list(self, provider: Provider, since: datetime) -> list[dict[str, Any]]:
        """The account's predictions created since `since`, newest first, from `GET
        /predictions` (Replicate's; CometAPI's route has none), page after page until one
        reaches back past `since`. Reads at most LIST_PAGES pages: a ProviderError says when
        there were more, so that "not found" is never said of a window not looked through."""
        query = {"created_after": since.astimezone(UTC).isoformat().replace("+00:00", "Z")}
        found: list[dict[str, Any]] = []
        for _ in range(LIST_PAGES):
            page = self._request(
                provider, "GET", "/predictions?" + urlencode(query), parse=parse_page
            )
            for prediction in page["results"]:
                created = creation_time(prediction)
                if created is not None and created < since:
                    return found  # newest first: the rest is older still
                found.append(prediction)
            # Only the cursor is taken from `next`: Darkroom requests the URLs it builds.
            cursor = parse_qs(urlsplit(str(page.get("next") or "")).query).get("cursor")
            if not cursor:
                return found
            query["cursor"] = cursor[0]
        raise ProviderError(
            f"{provider.label} lists more than {len(found)} predictions made since "
            f"{since:%Y-%m-%d %H:%M:%S} UTC; Darkroom looked no further.",
            retryable=False,
        )

    def close(self) -> None:
        self.transport.close()

    def _request(
        self,
        provider: Provider,
        method: str,
        path: str,
        json: Any = None,
        parse: Callable[[Provider, httpx.Response], Any] | None = None,
    ) -> Any:
        request = httpx.Request(
            method,
            provider.base_url + path,
            json=json,
            headers={"Authorization": f"Bearer {provider.token}", "User-Agent": USER_AGENT},
            extensions={"timeout": self.timeout},
        )
        try:
            response = tallies.send(self.transport, request, provider)
            try:
                response.read()
            finally:
                response.close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing was sent: the connection never opened.
            raise ProviderError(
                f"Could not connect to {provider.label}: {describe(exc)}", retryable=True
            ) from exc
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"{provider.label} did not answer in time ({describe(exc)}).",
                retryable=True,
                maybe_applied=True,
            ) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"The connection to {provider.label} failed: {describe(exc)}",
                retryable=True,
                maybe_applied=True,
            ) from exc
        if response.status_code == 429:
            # The provider's limit is lower than the budget thought: every worker slows down.
            kind = "create" if path.startswith("/models/") else "query"
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            RequestBudget.of(provider.name, kind).throttled(retry_after)
        return (parse or parse_response)(provider, response)

    def webhook_secret(self, provider: Provider) -> str:
        """The key the provider signs this account's webhooks with (`whsec_...`)."""
        return self._request(provider, "GET", "/webhooks/default/secret", parse=parse_secret)


def parse_response(provider: Provider, response: httpx.Response) -> dict[str, Any]:
    raise_for_status(provider, response)
    payload = json_object(response)
    prediction_id = payload.get("id")
    if not isinstance(prediction_id, str) or not PREDICTION_ID_RE.fullmatch(prediction_id):
        raise ProviderError(
            f"{provider.label} sent a response that is not a prediction.",
            retryable=True,
            maybe_applied=True,
            status=response.status_code,
        )
    return payload


def parse_page(provider: Provider, response: httpx.Response) -> dict[str, Any]:
    """A page of predictions (`{"results": [...], "next": ...}`), keeping only the results
    that are predictions."""
    raise_for_status(provider, response)
    page = json_object(response)
    results = page.get("results")
    if not isinstance(results, list):
        raise ProviderError(
            f"{provider.label} sent a list of predictions that is not one.",
            retryable=True,
            status=response.status_code,
        )
    page["results"] = [
        p
        for p in results
        if isinstance(p, dict)
        and isinstance(p.get("id"), str)
        and PREDICTION_ID_RE.fullmatch(p["id"])
    ]
    return page


def creation_time(prediction: dict[str, Any]) -> datetime | None:
    """When the provider says it created `prediction` (aware), or None if it does not say."""
    try:
        moment = datetime.fromisoformat(prediction.get("created_at"))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else None


def parse_secret(provider: Provider, response: httpx.Response) -> str:
    raise_for_status(provider, response)
    key = json_object(response).get("key")
    if not isinstance(key, str) or not key.startswith("whsec_"):
        raise ProviderError(
            f"{provider.label} sent a webhook secret that is not one.",
            retryable=True,
            status=response.status_code,
        )
    return key


def raise_for_status(provider: Provider, response: httpx.Response) -> None:
    """ProviderError for any answer but a success, saying whether to try again."""
    status = response.status_code
    if status == 429:
        raise ProviderError(
            f"{provider.label} is rate limiting requests (429).",
            retryable=True,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        raise ProviderError(
            f"{provider.label} had a server error ({status}).",
            retryable=True,
            maybe_applied=True,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 400:
        raise ProviderError(
            f"{provider.label} refused the request ({status}): {problem_detail(response)}",
            retryable=False,
            status=status,
        )
    if status >= 300:
        raise ProviderError(
            f"{provider.label} answered with an unexpected redirect ({status}).",
            retryable=False,
            maybe_applied=True,
            status=status,
        )


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's body as a JSON object; empty if it is anything else (nested too deep for
    the parser included)."""
    try:
        payload = response.json()
    except (ValueError, RecursionError):
        return {}
    return payload if isinstance(payload, dict) else {}


def problem_detail(response: httpx.Response) -> str:
    """The provider's own words from a Replicate-style problem body, or the start of the text."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error", "title", "message"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key].strip()
    return str(body)[:300]


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


_shared: tuple[int, ProviderClient] | None = None


def shared_client() -> ProviderClient:
    """One pooled client per process; a forked worker child makes its own."""
    global _shared
    if _shared is None or _shared[0] != os.getpid():
        _shared = (os.getpid(), ProviderClient())
    return _shared[1]


@receiver(setting_changed)
def forget_shared_client(setting: str, **kwargs) -> None:
    """The shared client reads the timeouts once: a test that changes them gets a new one."""
    global _shared
    if setting in ("PROVIDER_CONNECT_TIMEOUT", "PROVIDER_READ_TIMEOUT"):
        _shared = None
