"""Logging filters. Logs never hold a share link's or an invite's token: each is its link's only
credential, so it must not sit in plain text in a log. Expected refusals are one line each."""

import logging
import re

SHARE_TOKEN = re.compile(r"(/s/|/invite/)[^/\s?#\"']+")


def hide_share_tokens(text: str) -> str:
    return SHARE_TOKEN.sub(r"\1<token>", text)


class HideShareTokens(logging.Filter):
    """On a handler: every record it writes, from any logger, with share and invite tokens
    masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = hide_share_tokens(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class OneLineRefusals(logging.Filter):
    """On django.request: a 4xx is an expected refusal (a viewer's missing role, another team's
    id, a revoked share link, a malformed request), worth one line, not the traceback Django
    attaches to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if 400 <= (getattr(record, "status_code", None) or 0) < 500:
            record.exc_info, record.exc_text = None, None
        return True
