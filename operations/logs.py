"""How log lines read for a machine: LOG_FORMAT=json writes each as one JSON object, with the
prediction (or output, or outgoing webhook) it is about as a field of its own. A line about one
names it with its id ("prediction 42: ...", "webhook for prediction 42 refused"), as every such
line in Darkroom does, or passes the id as `extra`. Django's refusals of a client's request are
one warning line."""

import json
import logging
import re
from datetime import UTC, datetime

# The ids a line may carry as `extra`, and the fields they become.
CONTEXT = (
    "prediction_id",
    "output_id",
    "webhook_id",
    "team_id",
    "provider",
    "status",
    "status_code",
)
ABOUT = re.compile(r"\b(prediction|output|outgoing webhook) (\d+)\b")
ABOUT_FIELDS = {
    "prediction": "prediction_id",
    "output": "output_id",
    "outgoing webhook": "webhook_id",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for about in ABOUT.finditer(message):
            entry.setdefault(ABOUT_FIELDS[about[1]], int(about[2]))
        for name in CONTEXT:
            value = getattr(record, name, None)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class OneLineSuspiciousRequests(logging.Filter):
    """On a handler (a logger's own filters miss its children's records): what Django logs on
    django.security.<kind> when it refuses a client's request with a 400 (a Host header not in
    ALLOWED_HOSTS, too many fields, a body too big) is a scanner's probe or a client's mistake,
    worth one warning line, not an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security.") and getattr(record, "status_code", 0) == 400:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
