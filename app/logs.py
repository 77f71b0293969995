"""Logging for every process of the service: one JSON object per line on stderr, or text for a terminal.

The configuration is a :func:`logging.config.dictConfig` dictionary handed to uvicorn as its
``log_config``, so that uvicorn applies it in the parent and again in every worker process it
spawns (a ``basicConfig`` in the parent does not survive the spawn). Every logger propagates to
the root handler: ours (``denoise.*``), uvicorn's, onnxruntime's and Python warnings alike.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS

LogFormat = Literal["json", "text"]

#: Fields of every JSON line, renamed for log collectors; access lines add the request's fields.
_JSON_FIELDS = "%(levelname)s %(name)s %(message)s %(process)d"
_RENAMED = {"levelname": "level", "name": "logger", "process": "pid"}
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


#: Control characters (C0, DEL, C1) as text logs show them: escaped, so that what a client sent (a path, a
#: header) cannot end a line, forge the next one or colour a terminal. JSON lines escape them already.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


class TextFormatter(logging.Formatter):
    """The text format, with control characters in the message escaped (a traceback keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = record.message.translate(_ESCAPES)
        return super().formatMessage(record)


def log_config(level: str, fmt: LogFormat) -> dict[str, Any]:
    """The dictConfig dictionary for ``level`` (a logging level name, any case) and ``fmt``."""
    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",  # 10 µs a line less than the json module
            "fmt": _JSON_FIELDS,
            "rename_fields": _RENAMED,
            "timestamp": "time",  # ISO 8601 in UTC, to the microsecond
            # uvicorn adds an ANSI-coloured copy of some messages; the plain one is enough.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
    else:
        formatter = {"()": "app.logs.TextFormatter", "format": _TEXT_FORMAT}
    # uvicorn's own loggers keep their handlers unless told otherwise; route them to ours.
    uvicorn_loggers = {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"denoise": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "denoise", "stream": "ext://sys.stderr"}
        },
        "loggers": {**uvicorn_loggers, "uvicorn.access": {"handlers": [], "propagate": False}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


def skip_unshown_record_fields() -> None:
    """Spare every log record of this process the fields neither format shows, as the logging HOWTO's
    "Optimization" section says: the caller's file, line and function (a walk up the stack per record),
    the thread, and the multiprocessing process name. The process id stays (JSON lines carry it)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def configure(level: str, fmt: LogFormat) -> None:
    """Configure this process (the parent before uvicorn starts; uvicorn repeats it in each worker)."""
    logging.config.dictConfig(log_config(level, fmt))
    logging.captureWarnings(True)
    skip_unshown_record_fields()
