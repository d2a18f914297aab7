"""A share link's token is its only credential: no log line ever holds it."""

import io
import logging
from datetime import timedelta
from types import SimpleNamespace

from gunicorn.config import Config

from dashboard.gunicorn import Logger
from dashboard.logging import HideShareTokens

TOKEN = "k2Vq3xZ9-secret-share-token_Abc"


def console_handler() -> logging.Handler:
    return next(
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, HideShareTokens) for f in handler.filters)
    )


def test_a_request_for_a_share_page_is_logged_without_its_token(client, db):
    handler = console_handler()
    stream = io.StringIO()
    original = handler.setStream(stream)
    try:
        response = client.get(f"/s/{TOKEN}/12345/file")
    finally:
        handler.setStream(original)

    assert response.status_code == 404
    assert "Not Found: /s/<token>/12345/file" in stream.getvalue()
    assert TOKEN not in stream.getvalue()


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
