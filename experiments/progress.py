"""Live progress of a running experiment: a rich Live panel on a terminal, plain lines otherwise.

The experiment calls :meth:`Progress.update` with its current numbers (elapsed, call rate,
active calls, success rate, p99 setup) and :meth:`Progress.event` for timeline entries (fault
injected, detection...), from any thread (the runtime's loop, usually); a lock guards the state.
On a TTY, rich's own refresh thread redraws the panel 4 times a second; otherwise a line is
printed at most every ``every`` seconds (on stderr-free stdout, so ``--json``'s last line stays
last: call :meth:`stop` before printing it). ``Progress(enabled=False)`` does nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, title: str, total: float | None = None, *, stream: TextIO | None = None,
                 every: float = 5.0, enabled: bool = True, live: bool | None = None) -> None:
        self.title = title
        self.total = total
        self.stream = stream or sys.stdout
        self.every = every
        self.enabled = enabled
        self.live = (bool(getattr(self.stream, "isatty", lambda: False)()) if live is None else live) and enabled
        self.fields: dict[str, Any] = {}
        self.events: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_line = 0.0
        self._live: Any = None

    def __enter__(self) -> Progress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(get_renderable=self._render, console=Console(file=self.stream),
                              refresh_per_second=4, transient=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self.enabled and self.fields:
            self._print_line(final=True)

    def update(self, **fields: Any) -> None:
        """New values of ``elapsed``, ``rate``, ``active``, ``calls``, ``success``, ``p99_setup_ms``
        (any subset; other keys are shown as they are)."""
        with self._lock:
            self.fields.update(fields)
        if self.enabled and not self.live:
            now = time.monotonic()
            if now - self._last_line >= self.every:
                self._last_line = now
                self._print_line()

    def event(self, t: float, text: str) -> None:
        """A timeline entry at ``t`` seconds of the run."""
        with self._lock:
            self.events.append((t, text))
        if self.enabled and not self.live:
            print(f"[{self.title}] t={t:.3f}s {text}", file=self.stream, flush=True)

    # -- rendering -------------------------------------------------------------------------

    def _snapshot(self) -> tuple[dict[str, Any], list[tuple[float, str]]]:
        with self._lock:
            return dict(self.fields), list(self.events)

    def line(self) -> str:
        fields, _ = self._snapshot()
        elapsed = fields.pop("elapsed", time.monotonic() - self._started)
        total = f"/{self.total:.0f}" if self.total else ""
        parts = [f"[{self.title}] {elapsed:.0f}{total} s"]
        for key, label, fmt in _FIELDS:
            if fields.get(key) is not None:
                parts.append(f"{label} {fmt.format(fields.pop(key))}")
            else:
                fields.pop(key, None)
        parts += [f"{k} {v}" for k, v in fields.items()]
        return " | ".join(parts)

    def _print_line(self, final: bool = False) -> None:
        print(self.line() + (" (done)" if final else ""), file=self.stream, flush=True)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        fields, events = self._snapshot()
        elapsed = fields.pop("elapsed", time.monotonic() - self._started)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        total = f" / {self.total:.0f} s" if self.total else " s"
        grid.add_row("elapsed", f"{elapsed:.1f}{total}")
        for key, label, fmt in _FIELDS:
            value = fields.pop(key, None)
            if value is not None:
                grid.add_row(label, fmt.format(value))
        for key, value in fields.items():
            grid.add_row(key, str(value))
        parts: list[Any] = []
        if self.total:
            parts.append(ProgressBar(total=self.total, completed=min(elapsed, self.total), width=50))
        parts.append(grid)
        if events:
            timeline = Table(title="timeline", show_header=False, box=None)
            for t, text in events[-8:]:
                timeline.add_row(f"{t:8.3f} s", text)
            parts.append(timeline)
        return Panel(Group(*parts), title=self.title)


_FIELDS = (
    ("rate", "call rate", "{:.1f}/s"),
    ("calls", "calls", "{}"),
    ("active", "active calls", "{}"),
    ("success", "success", "{:.1%}"),
    ("p99_setup_ms", "p99 setup", "{:.1f} ms"),
)
