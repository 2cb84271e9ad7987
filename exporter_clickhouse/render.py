"""The CLI's output: rich tables and trees for people, JSON and CSV for scripts.

Commands hand over *records* (dicts of plain values in display units: milliseconds, dollars,
ISO times) and a list of :class:`Column`; ``--format`` picks how they are written. JSON and CSV
carry every key of the records, the table shows the columns it is given, formatted by kind.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

__all__ = ["FORMATS", "Column", "SpanNode", "write_records", "write_tree", "write_message"]

FORMATS = ("table", "json", "csv")
Kind = Literal["text", "int", "cost", "ms", "percent", "time", "id"]
_BAR_WIDTH = 20
_ERROR_STATUSES = ("Error", "STATUS_CODE_ERROR")  # the second: Collectors before v0.109


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: Kind = "text"

    @property
    def right_aligned(self) -> bool:
        return self.kind in ("int", "cost", "ms", "percent")


@dataclass
class SpanNode:
    """One span of ``llmtel trace`` with its children; ``totals`` sums its subtree."""

    record: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {**self.record, "totals": self.totals, "children": [child.as_json() for child in self.children]}


def format_value(value: Any, kind: Kind) -> str:
    """``value`` as a table cell."""
    if value is None or value == "":
        return "-" if kind in ("cost", "ms", "percent") else ""
    if kind == "int":
        return f"{int(value):,}"
    if kind == "cost":
        if value == 0 or value >= 1:
            return f"${value:,.2f}"
        return f"${value:.6f}" if value >= 0.000001 else f"${value:.1e}"
    if kind == "ms":
        return f"{value:,.1f} ms" if value < 10_000 else f"{value / 1000:,.2f} s"
    if kind == "percent":
        return f"{value * 100:.1f}%"
    if kind == "time":
        return str(value).replace("T", " ")[:23]
    return str(value)


def _console(out: TextIO) -> Any:
    from rich.console import Console

    terminal = out.isatty()
    # Piped tables are not cut to 80 columns; colours only on a terminal.
    return Console(file=out, width=None if terminal else 200, no_color=not terminal, highlight=False,
                   force_terminal=terminal)


def write_records(records: Sequence[dict[str, Any]], columns: Sequence[Column], fmt: str, *,
                  title: str = "", out: TextIO | None = None) -> None:
    """Records as a table (``columns`` only), or every key as JSON (a list) or CSV (a header line)."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(json.dumps(list(records), ensure_ascii=False, indent=2, default=str) + "\n")
        return
    if fmt == "csv":
        keys: list[str] = []
        for record in records:
            keys.extend(key for key in record if key not in keys)
        writer = csv.DictWriter(out, fieldnames=keys or [c.key for c in columns], lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({key: _csv_value(value) for key, value in record.items()})
        return
    from rich.table import Table

    table = Table(title=title or None, title_justify="left")
    for column in columns:
        table.add_column(column.header, justify="right" if column.right_aligned else "left",
                         overflow="fold")
    for record in records:
        cells = [format_value(record.get(column.key), column.kind) for column in columns]
        failed = record.get("status") in _ERROR_STATUSES or record.get("status") == "FAIL"
        table.add_row(*cells, style="red" if failed else None)
    _console(out).print(table)


def _csv_value(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def write_tree(roots: Sequence[SpanNode], fmt: str, *, title: str = "", out: TextIO | None = None) -> None:
    """A span tree: rich Tree with duration bars, nested JSON, or CSV rows with their depth."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(json.dumps([root.as_json() for root in roots], ensure_ascii=False, indent=2, default=str) + "\n")
        return
    if fmt == "csv":
        flat: list[dict[str, Any]] = []

        def walk(node: SpanNode, depth: int) -> None:
            flat.append({"depth": depth, **node.record,
                         **{f"subtree_{key}": value for key, value in node.totals.items()}})
            for child in node.children:
                walk(child, depth + 1)

        for root in roots:
            walk(root, 0)
        write_records(flat, [], "csv", out=out)
        return
    from rich.markup import escape
    from rich.tree import Tree

    if not roots:
        return
    trace_start = min(root.record["start_ms_offset"] for root in roots)
    trace_end = max(root.record["start_ms_offset"] + root.record["duration_ms"] for root in roots)
    span = max(trace_end - trace_start, 1e-9)

    def label(node: SpanNode) -> str:
        record = node.record
        offset = int((record["start_ms_offset"] - trace_start) / span * _BAR_WIDTH)
        length = max(1, round(record["duration_ms"] / span * _BAR_WIDTH))
        bar = " " * offset + "█" * min(length, _BAR_WIDTH - offset) + " " * max(0, _BAR_WIDTH - offset - length)
        error = record["status"] in _ERROR_STATUSES
        parts = [f"[bold red]{escape(record['name'])}[/]" if error else f"[bold]{escape(record['name'])}[/]",
                 f"[dim]{escape(record['kind'])}[/]", f"[cyan]{bar}[/]", format_value(record["duration_ms"], "ms")]
        if record.get("model"):
            parts.append(escape(record["model"]))
        if record.get("input_tokens") or record.get("output_tokens"):
            parts.append(f"{record['input_tokens']:,}→{record['output_tokens']:,} tok")
        if record.get("cost") is not None:
            parts.append(format_value(record["cost"], "cost"))
        if error:
            why = record.get("error_type") or record.get("status_message") or "error"
            parts.append(f"[red]✗ {escape(str(why))}[/]")
        if node.children and node.totals.get("llm_calls"):
            totals = node.totals
            parts.append(f"[dim](subtree: {totals['llm_calls']} LLM calls, "
                         f"{totals['input_tokens']:,}→{totals['output_tokens']:,} tok, "
                         f"{format_value(totals['cost'], 'cost')})[/]")
        return "  ".join(parts)

    def grow(tree: Tree, node: SpanNode) -> None:
        for child in node.children:
            grow(tree.add(label(child)), child)

    console = _console(out)
    for root in roots:
        tree = Tree(label(root))
        grow(tree, root)
        if title:
            console.print(title)
        console.print(tree)


def write_message(text: str, out: TextIO | None = None) -> None:
    """One line for people (on stderr by default, so pipes get only data)."""
    (out or sys.stderr).write(text.rstrip("\n") + "\n")
