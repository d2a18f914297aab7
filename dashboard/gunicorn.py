"""gunicorn's access log, without share tokens (`--logger-class dashboard.gunicorn.Logger`)."""

from gunicorn.glogging import Logger as GunicornLogger

from .logging import hide_share_tokens


class Logger(GunicornLogger):
    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        # The request line, the path and the referer may all name a share page.
        for key in ("r", "U", "f"):
            atoms[key] = hide_share_tokens(atoms[key])
        return atoms
