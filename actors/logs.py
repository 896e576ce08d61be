"""Structured logging: structlog, one event per line, ``module`` / ``instance`` / ``call_id`` bound.

Applications (``run.py``, an embedding service) call :func:`configure_logging` once at start-up;
library code only calls :func:`get_logger` and never configures anything, so a host application
that has its own structlog configuration keeps it.

Usage::

    log = get_logger("pcscf", instance="pcscf-1")
    log.info("listening", port=5060)
    call_log = log.bind(call_id=msg.call_id)      # per-call logger
    call_log.warning("timer_b_fired", branch=branch)

Each event is one line: JSON (``{"module": "pcscf", "instance": "pcscf-1", "call_id": ...,
"event": "timer_b_fired", "level": "warning", "timestamp": "2024-...Z"}``) when the stream is not a
terminal, a coloured console line when it is. Values bound with
``structlog.contextvars.bind_contextvars`` (e.g. ``call_id`` for the duration of a task) are merged
in too.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog

__all__ = ["configure_logging", "get_logger", "reset_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _StderrProxy:
    """Writes to whatever ``sys.stderr`` is *now* (pytest and others swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())


_STDERR = _StderrProxy()
_current: tuple[int, bool, int] | None = None


def _parse_level(level: str | int) -> int:
    if isinstance(level, bool):
        raise ValueError(f"unknown log level {level!r}")
    if isinstance(level, int):
        if level < 0:
            raise ValueError(f"unknown log level {level!r}")
        return level
    if isinstance(level, str) and level.strip().lower() in _LEVELS:
        return _LEVELS[level.strip().lower()]
    raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(sorted(set(_LEVELS) - {'warn'}))}")


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # closed or detached stream
        return False


def configure_logging(level: str | int = "info", json: bool | None = None, stream: IO[str] | None = None) -> None:
    """Configure structlog for the whole process.

    ``level``: "debug", "info", "warning", "error", "critical" (or a ``logging`` level number);
    events below it cost one method call and are dropped. ``json``: ``True`` for JSON lines,
    ``False`` for the console renderer, ``None`` to choose by ``stream.isatty()``. ``stream``: a
    text stream, default the *current* ``sys.stderr`` at each write.

    Idempotent: calling it again with the same arguments does nothing; with different arguments
    it reconfigures, and loggers obtained from :func:`get_logger` earlier follow the new
    configuration (loggers are not cached; a logger returned by ``.bind()`` keeps the
    configuration that was current when it was bound).
    """
    global _current
    lvl = _parse_level(level)
    out: Any = stream if stream is not None else _STDERR
    if not callable(getattr(out, "write", None)):
        raise TypeError(f"stream must have a write() method, got {type(out).__name__}")
    use_json = (not _is_terminal(out)) if json is None else bool(json)
    key = (lvl, use_json, id(out))
    if key == _current and structlog.is_configured():
        return

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.dev.set_exc_info,
    ]
    if use_json:
        processors += [
            structlog.processors.format_exc_info,  # traceback as a string: still one line of JSON
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=_is_terminal(out)))

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        context_class=dict,
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _current = key


def reset_logging() -> None:
    """Undo :func:`configure_logging`: back to structlog's defaults (for tests and embedders)."""
    global _current
    structlog.reset_defaults()
    _current = None


def get_logger(module: str, instance: str | None = None, **bound: Any) -> Any:
    """A logger with ``module`` (and ``instance``, when given, and ``bound``) bound.

    Bind ``call_id`` per call with ``.bind(call_id=...)``. The logger uses whatever structlog
    configuration is current when it logs (see :func:`configure_logging`).
    """
    values: dict[str, Any] = {"module": module}
    if instance is not None:
        values["instance"] = instance
    values.update(bound)
    return structlog.get_logger(**values)
