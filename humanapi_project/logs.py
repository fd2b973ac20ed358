"""JSON log lines (LOG_FORMAT=json): one object a line, for a log shipper to read without parsing
text. Every record becomes `{"time", "level", "logger", "message"}`, plus the plain values it
was given as `extra` (the request line's method, path, status, duration_ms, request_id and
client), plus `exception` when it carries one. The handlers' RedactSecrets filter has already
rewritten the message and traceback when this runs."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# The attributes every LogRecord has; anything else on a record was passed as `extra`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_PLAIN = (str, int, float, bool)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Objects (a request, a socket) are left out: their text may hold what the message may not.
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and (value is None or isinstance(value, _PLAIN)):
                entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
