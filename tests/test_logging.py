"""A share link's token is its only credential: no log line ever holds it. Expected refusals
(403, 404) are one line each; a server error keeps its traceback."""

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace

from django.test import Client
from gunicorn.config import Config

from accounts.models import Role
from dashboard.gunicorn import Logger
from dashboard.logging import HideShareTokens, OneLineRefusals, hide_share_tokens

from .conftest import make_prediction, make_team, make_user

TOKEN = "k2Vq3xZ9-secret-share-token_Abc"


def console_handler() -> logging.Handler:
    return next(
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, HideShareTokens) for f in handler.filters)
    )


@contextmanager
def console_output() -> Iterator[io.StringIO]:
    """What the console handler writes meanwhile."""
    handler = console_handler()
    stream = io.StringIO()
    original = handler.setStream(stream)
    try:
        yield stream
    finally:
        handler.setStream(original)


def test_a_request_for_a_share_page_is_logged_without_its_token(client, db):
    with console_output() as output:
        response = client.get(f"/s/{TOKEN}/12345/file")

    assert response.status_code == 404
    assert "Not Found: /s/<token>/12345/file" in output.getvalue()
    assert TOKEN not in output.getvalue()


def test_gunicorns_access_log_masks_the_token_in_the_request_line_path_and_referer():
    path = f"/s/{TOKEN}/7/download"
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": path,
        "PATH_INFO": path,
        "QUERY_STRING": "v=abc",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_REFERER": f"https://darkroom.example/s/{TOKEN}/",
        "REMOTE_ADDR": "127.0.0.1",
    }
    request = SimpleNamespace(headers=[], method="GET", path=path, query="v=abc", version=(1, 1))
    response = SimpleNamespace(status="200 OK", sent=10, response_length=10, headers=[])

    atoms = Logger(Config()).atoms(response, request, environ, timedelta(seconds=0.01))

    line = Config().access_log_format % atoms
    assert TOKEN not in line
    assert "GET /s/<token>/7/download HTTP/1.1" in line
    assert '"https://darkroom.example/s/<token>/"' in line


def test_a_viewer_refused_a_submission_is_one_line_in_the_log_not_a_traceback(team):
    viewer = Client()
    viewer.force_login(make_user("vic", team, Role.VIEWER))

    with console_output() as output:
        response = viewer.post("/predictions/new", {"prompt": "x"})

    assert response.status_code == 403
    assert output.getvalue().count("\n") == 1
    assert "WARNING django.request Forbidden (Permission denied): /predictions/new" in (
        output.getvalue()
    )
    assert "Traceback" not in output.getvalue()


def test_another_teams_prediction_is_one_line_in_the_log_not_a_traceback(client):
    theirs = make_prediction("their work", team=make_team("Night Shift"))

    with console_output() as output:
        response = client.get(theirs.get_absolute_url())

    assert response.status_code == 404
    assert output.getvalue().count("\n") == 1
    assert f"WARNING django.request Not Found: {theirs.get_absolute_url()}" in output.getvalue()


def request_record(status_code: int, error: Exception) -> logging.LogRecord:
    """A record as django.request writes it for a response with an exception attached."""
    try:
        raise error
    except Exception:
        exc_info = sys.exc_info()
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "x", (), exc_info)
    record.status_code = status_code
    return record


def test_a_server_error_keeps_its_traceback():
    record = request_record(500, ValueError("a bug"))

    assert OneLineRefusals().filter(record)
    assert record.exc_info[1].args == ("a bug",)


def test_an_invites_token_is_masked_like_a_share_links():
    assert hide_share_tokens("GET /invite/l6ds6oMzicVHv_bKVjOtoWZ/ HTTP/1.1") == (
        "GET /invite/<token>/ HTTP/1.1"
    )
