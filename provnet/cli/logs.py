# Logging for every provnet process: text (oslo.log's layout) or JSON lines, to stderr or a file, request ids kept.
from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from typing import TextIO

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# libraries whose INFO lines say nothing an operator needs (alembic: "Context impl SQLiteImpl", plugin set-up...)
QUIET_LIBRARIES = ("alembic", "aiohttp.access", "asyncio", "urllib3", "pyroute2")
REQUEST_ID = re.compile(r"\breq-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, process, message, and request_id when the
    message carries one (the proxy, agent and API put it in their request lines), exception when there is one;
    a record's `fields` (extra={"fields": {...}}) become members too."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": message,
        }
        fields = getattr(record, "fields", None)  # structured lines (the audit trail): their members as keys
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(key, value)
        request_id = getattr(record, "request_id", None) or _request_id(message)
        if request_id:
            out["request_id"] = request_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _request_id(message: str) -> str | None:
    match = REQUEST_ID.search(message)
    return match.group(0) if match else None


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (a test runner may swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def make_handler(fmt: str = "text", log_file: str | None = None) -> logging.Handler:
    """The handler for `fmt` and `log_file` (a file follows logrotate: it is reopened when moved). OSError when
    the file cannot be opened."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler: logging.Handler = (logging.handlers.WatchedFileHandler(log_file, encoding="utf-8") if log_file
                                else StderrHandler())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
    return handler


def setup_logging(debug: bool, fmt: str = "text", log_file: str | None = None) -> None:
    """Install provnet's one handler on the root logger, replacing an earlier one (the lab and tests run the CLI
    several times in one process); INFO (DEBUG with `debug`), libraries' chatter at WARNING."""
    handler = make_handler(fmt, log_file)
    handler._provnet = True  # type: ignore[attr-defined]  # our mark on the handler, found again with getattr
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_provnet", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if debug else logging.WARNING)
