"""gunicorn's access log, without share tokens and with the client's address behind a trusted
proxy (`--logger-class dashboard.gunicorn.Logger`)."""

from gunicorn.glogging import Logger as GunicornLogger

from .clients import client_address
from .logging import hide_share_tokens


class Logger(GunicornLogger):
    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        # The request line, the path and the referer may all name a share page.
        for key in ("r", "U", "f"):
            atoms[key] = hide_share_tokens(atoms[key])
        atoms["h"] = client_address(environ)
        return atoms
