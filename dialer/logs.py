"""Structured logging: one line per event, ``key=value`` or JSON, and never a secret."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

_SECRET_PATTERNS: list[re.Pattern[str]] = [
    # An Authorization header value "KEY:SIGNATURE" and any stray signature-looking blob.
    re.compile(r"(Authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+", re.IGNORECASE),
]


def _secrets() -> list[str]:
    value = os.environ.get("ZADARMA_SECRET", "")
    return [value] if len(value) >= 4 else []


def redact(text: str) -> str:
    for secret in _secrets():
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


class RedactingFilter(logging.Filter):
    """Last line of defence: scrub the secret from every record, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"logger={record.name}"]
        parts.append(f"msg={_quote(record.getMessage())}")
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_quote(str(value))}")
        if record.exc_info:
            parts.append(f"exc={_quote(redact(self.formatException(record.exc_info)))}")
        return redact(" ".join(parts))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str, ensure_ascii=False))


class _ExpectedSkips(logging.Filter):
    """A tick asked for early (a call ended) while the previous one still runs is skipped on purpose; a job that
    raised is logged by the daemon itself (``Daemon._on_job_event``: a traceback for a bug, one line for a lost
    database connection), so APScheduler's own copy is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apscheduler"):
            return True
        msg = str(record.msg)
        return "maximum number of running instances" not in msg and "raised an exception" not in msg


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n'):
        return value
    return json.dumps(value, ensure_ascii=False)


def setup_logging(verbose: int = 0, *, json_lines: bool = False, stream: Any = None) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO; keep it for -vv only.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.INFO if verbose >= 3 else logging.WARNING)
    # APScheduler logs every job run at INFO, and Alembic every migration step; the daemon logs what matters.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.INFO if verbose >= 3 else logging.WARNING)
    handler.addFilter(_ExpectedSkips())


def log_event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` (rendered as key=value or JSON keys)."""
    logger.log(level, msg, extra={"fields": fields})
