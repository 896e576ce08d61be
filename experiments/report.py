"""``report.html``: one self-contained page per run (plots inlined as SVG, no external files),
plus the end-of-run summary table on the terminal.

- :func:`write_report`: title, an "interrupted" banner when the run was stopped early, the
  headline metrics table, a paper-vs-measured table when the experiment reproduces a figure,
  the fault timeline, the plots (inline SVG; base64 PNG if an SVG is missing), and the full
  summary as nested tables.
- :func:`summary_rows` / :func:`print_summary_table`: the same headline numbers as rows, printed
  with rich on a terminal and as aligned plain text otherwise; :func:`print_compare_table` puts
  several runs side by side.
"""

from __future__ import annotations

import base64
import html
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["figure_html", "flatten", "html_table", "print_compare_table", "print_rows", "print_summary_table", "summary_rows", "write_report"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
font-size:.9em}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#fff3cd;border:1px solid #e0c068;padding:.6em 1em;margin:1em 0}
figure{margin:1.2em 0}figure svg,figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
details{margin:1em 0}code{background:#f5f5f5;padding:0 .2em}
"""


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", 1)]``; lists of scalars stay values."""
    if isinstance(data, Mapping):
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, data)]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


HEADLINE = (
    ("mode", "mode"),
    ("calls", "calls placed"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("timeouts", "timed out"),
    ("success_rate", "success rate"),
    ("max_cps", "max calls/s with every call completed"),
    ("setup_ms.p50", "setup INVITE->200 p50 (ms)"),
    ("setup_ms.p90", "setup INVITE->200 p90 (ms)"),
    ("setup_ms.p99", "setup INVITE->200 p99 (ms)"),
    ("setup_ms.p999", "setup INVITE->200 p99.9 (ms)"),
    ("setup_ms.max", "setup INVITE->200 max (ms)"),
    ("ringing_ms.p50", "INVITE->180 p50 (ms)"),
    ("ringing_ms.p99", "INVITE->180 p99 (ms)"),
    ("media_latency_ms.p50", "media one-way p50 (ms)"),
    ("media_latency_ms.p99", "media one-way p99 (ms)"),
    ("media_latency_ms.max", "media one-way max (ms)"),
    ("media_loss", "media loss (fraction)"),
    ("retransmissions", "retransmissions counted"),
    ("duration_s", "duration (s)"),
    ("interrupted", "interrupted"),
)


def summary_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Headline rows (label, formatted value) for the metrics keys present; other scalar keys after."""
    flat = dict(flatten(metrics))
    rows = [(label, _fmt(flat[key])) for key, label in HEADLINE if key in flat]
    known = {key for key, _ in HEADLINE} | {"results_dir"}
    rows += [(key, _fmt(value)) for key, value in flat.items() if key not in known and not key.startswith(("setup_ms", "media_latency_ms", "ringing_ms"))]
    return rows


def _is_tty(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def print_summary_table(metrics: Mapping[str, Any], *, title: str = "Summary", stream: TextIO | None = None) -> None:
    print_compare_table({"": metrics}, title=title, stream=stream)


def print_compare_table(runs: Mapping[str, Mapping[str, Any]], *, title: str = "Summary", stream: TextIO | None = None) -> None:
    """One column per run; rich on a terminal, aligned text otherwise."""
    per_run = {label: dict(summary_rows(m)) for label, m in runs.items()}
    labels = list(dict.fromkeys(label for rows in per_run.values() for label in rows))
    rows = [[label, *(per_run[run].get(label, "-") for run in runs)] for label in labels]
    print_rows(rows, ["", *(run or "value" for run in runs)], title=title, stream=stream, header=any(runs))


def print_rows(rows: Sequence[Sequence[str]], columns: Sequence[str], *, title: str = "Summary",
               stream: TextIO | None = None, header: bool = True) -> None:
    """A table of text cells: rich on a terminal, aligned plain text otherwise (first column left)."""
    stream = stream or sys.stdout
    if _is_tty(stream):
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=header)
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        Console(file=stream).print(table)
        return
    widths = [max([len(c) if header else 0] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(f"{c:<{widths[0]}}" if i == 0 else f"{c:>{widths[i]}}" for i, c in enumerate(cells))

    print(title, file=stream)
    if header:
        print(line(["", *columns[1:]]), file=stream)
    for row in rows:
        print(line(row), file=stream)


def html_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = html.escape(_fmt(cell) if not isinstance(cell, str) else cell)
            cls = ' class="num"' if i and isinstance(cell, (int, float)) else ""
            cells.append(f"<td{cls}>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def figure_html(figure: Any) -> str:
    svg_path, png_path = Path(figure.svg), Path(figure.png)
    if svg_path.is_file():
        svg = svg_path.read_text()
        body = svg[svg.find("<svg"):] if "<svg" in svg else svg
    elif png_path.is_file():
        body = f'<img alt="{html.escape(figure.title)}" src="data:image/png;base64,{base64.b64encode(png_path.read_bytes()).decode()}">'
    else:
        return ""
    return f"<figure>{body}<figcaption>{html.escape(figure.title)} ({html.escape(png_path.name)}, {html.escape(svg_path.name)})</figcaption></figure>"


def write_report(
    folder: Path,
    *,
    title: str,
    metrics: Mapping[str, Any],
    summary: Mapping[str, Any] | None = None,
    figures: Sequence[Any] = (),
    paper: Sequence[Mapping[str, Any]] = (),
    events: Sequence[Mapping[str, Any]] = (),
    interrupted: bool = False,
    columns: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``folder/report.html``; returns its path. ``columns`` (label -> metrics) makes the
    headline table side by side (a comparison)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if interrupted:
        parts.append("<div class='banner'><b>Interrupted:</b> the run was stopped early; these are the measurements taken until then.</div>")
    if columns:
        per_run = {label: dict(summary_rows(m)) for label, m in columns.items()}
        labels = list(dict.fromkeys(label for rows in per_run.values() for label in rows))
        parts.append("<h2>Summary</h2>" + html_table([[label, *(per_run[r].get(label, "-") for r in columns)] for label in labels],
                                                 ["", *columns]))
    else:
        parts.append("<h2>Summary</h2>" + html_table(summary_rows(metrics), ["", "measured"]))
    if paper:
        rows = [[p.get("figure", ""), p.get("quantity", ""), p.get("paper", ""), p.get("measured", "")] for p in paper]
        parts.append("<h2>Paper vs measured</h2>" + html_table(rows, ["figure", "quantity", "paper", "measured"]))
    if events:
        rows = [[f"{float(e['t']):.3f}" if e.get("t") is not None else "-", e.get("event", ""),
                 e.get("detail", "")] for e in events]
        parts.append("<h2>Timeline</h2>" + html_table(rows, ["t (s)", "event", "detail"]))
    if figures:
        parts.append("<h2>Plots</h2>" + "\n".join(figure_html(f) for f in figures))
    if summary:
        detail = json.dumps(summary, indent=2, default=str)
        parts.append(f"<h2>Details</h2><details><summary>summary.json</summary><pre>{html.escape(detail)}</pre></details>")
    parts.append("</body></html>")
    path = folder / "report.html"
    path.write_text("\n".join(parts))
    return path
