"""Structured logs: one JSON object per line on stderr (what log shippers expect).

`setup_logging("inference")` once in a service's main; then use the standard
`logging` module, passing structured fields with `extra={"fields": {...}}`
or the `log_event(logger, "msg", key=value)` helper.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(service: str, level: str | None = None) -> None:
    """Route every logger to JSON lines on stderr. Level from `RLHF_LOG_LEVEL` (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("RLHF_LOG_LEVEL", "INFO")).upper())
    # kafka-python is chatty at INFO about every connection attempt.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # kafka-python 3 warns whenever its network task runs > 100 ms, which a busy CPU-bound
    # service (training, generation) triggers constantly without anything being wrong.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


def log_event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, msg, extra={"fields": fields})
