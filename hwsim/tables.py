"""Every table the command line prints, in one place: ``--format table`` (the default), ``json``
or ``csv``.

A table is a title, column names and rows of values. ``table`` draws it as text that never cuts a
cell: at its natural width when it fits the terminal (or always, in a pipe, which has no width),
and otherwise as a list, one ``column: value`` line per cell, a blank line between rows, so a
narrow terminal wraps whole words instead of squeezing a column to a letter a line. ``json``
prints the rows as a list of objects (several tables: an object of lists, by title); ``csv`` the
header and rows (several tables: a ``table`` column first). Numbers keep their full value in
``json`` and ``csv``; ``table`` shows four significant digits, never an ellipsis.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence, TextIO

__all__ = ["Table", "FORMATS", "Format", "cell", "plain", "emit", "emit_mapping",
           "render_text", "terminal_width"]

Format = Literal["table", "json", "csv"]
FORMATS: tuple[str, ...] = ("table", "json", "csv")


@dataclass
class Table:
    """A titled table: *columns* names, *rows* of values (one per column); *right* names the
    columns to right-align (numbers are right-aligned anyway)."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    right: set[str] = field(default_factory=set)

    @classmethod
    def from_frame(cls, title: str, frame: Any, columns: Sequence[str] | None = None) -> Table:
        """A table of *frame*'s *columns* (default all), values as plain Python objects."""
        cols = list(columns if columns is not None else frame.columns)
        rows = [[plain(v) for v in row] for row in frame[cols].itertuples(index=False)]
        return cls(title, cols, rows)

    @classmethod
    def from_records(cls, title: str, records: Sequence[dict[str, Any]]) -> Table:
        """A table of dicts; the columns are every key, in order of first appearance."""
        cols = list(dict.fromkeys(k for r in records for k in r))
        return cls(title, cols, [[plain(r.get(c)) for c in cols] for r in records])


def plain(value: Any) -> Any:
    """*value* as a plain Python object: numpy scalars unwrapped, NaN as None."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def cell(value: Any) -> str:
    """The text of one table cell: ``-`` for none, ``true``/``false``, floats to four
    significant digits, integers with thousands separators."""
    value = plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return " ".join(str(value).split())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def terminal_width(stream: TextIO | None = None) -> int | None:
    """The width to fit: ``COLUMNS`` when set, the terminal's when *stream* is one, else None
    (a pipe or a file: no limit)."""
    env = os.environ.get("COLUMNS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    stream = stream if stream is not None else sys.stdout
    try:
        if stream.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


def _grid(table: Table) -> list[str]:
    """The table as aligned text lines at its natural width."""
    texts = [[cell(v) for v in row] for row in table.rows]
    widths = [max([len(c)] + [len(r[i]) for r in texts]) for i, c in enumerate(table.columns)]
    rightward = [c in table.right or (bool(table.rows) and all(
        _number(plain(r[i])) or plain(r[i]) is None for r in table.rows))
        for i, c in enumerate(table.columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w)
                         for v, w, right in zip(values, widths, rightward)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return [line(table.columns), rule, *(line(r) for r in texts)]


def _records(table: Table) -> list[str]:
    """The table as a list: a ``column: value`` line per cell, a blank line between rows."""
    width = max((len(c) for c in table.columns), default=0)
    out: list[str] = []
    for i, row in enumerate(table.rows):
        if i:
            out.append("")
        out += [f"{c.ljust(width)}  {cell(v)}" for c, v in zip(table.columns, row)]
    return out


def render_text(table: Table, width: int | None) -> str:
    """*table* as text: a grid when it fits *width* (None: any width), else a list."""
    lines = _grid(table)
    if width is not None and max(len(ln) for ln in lines) > width:
        lines = _records(table)
    head = [table.title, ""] if table.title else []
    return "\n".join(head + lines)


def _json_rows(table: Table) -> list[dict[str, Any]]:
    def clean(v: Any) -> Any:
        v = plain(v)
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return [{c: clean(v) for c, v in zip(table.columns, row)} for row in table.rows]


def emit(tables: Table | Iterable[Table], fmt: str = "table", *, out: TextIO | None = None,
         key_by_title: bool = False) -> None:
    """Print *tables* in format *fmt* on *out* (default stdout).

    ``json``: one table is a list of row objects (an object ``{title: rows}`` with
    *key_by_title* or several tables); ``csv``: the header and rows (several tables: a leading
    ``table`` column with each row's title); ``table``: :func:`render_text` of each, a blank line
    between them.
    """
    out = out if out is not None else sys.stdout
    many = [tables] if isinstance(tables, Table) else list(tables)
    if fmt == "json":
        data: Any = ({t.title: _json_rows(t) for t in many} if key_by_title or len(many) != 1
                     else _json_rows(many[0]))
        out.write(json.dumps(data, indent=2, default=str, allow_nan=False) + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if len(many) == 1:
            writer.writerow(many[0].columns)
            writer.writerows([[_csv(v) for v in row] for row in many[0].rows])
        else:
            cols = list(dict.fromkeys(c for t in many for c in t.columns))
            writer.writerow(["table", *cols])
            for t in many:
                at = {c: i for i, c in enumerate(t.columns)}
                writer.writerows([[t.title, *(_csv(row[at[c]]) if c in at else "" for c in cols)]
                                  for row in t.rows])
        out.write(buf.getvalue())
    elif fmt == "table":
        width = terminal_width(out)
        out.write("\n\n".join(render_text(t, width) for t in many) + "\n")
    else:
        raise ValueError(f"format {fmt!r}: valid: {', '.join(FORMATS)}")
    out.flush()


def _csv(value: Any) -> Any:
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return value


def emit_mapping(title: str, mapping: dict[str, Any], fmt: str = "table", *,
                 out: TextIO | None = None) -> None:
    """Print a key/value mapping (a run's summary): ``json`` as one object, ``csv`` and
    ``table`` as a two-column table ``key, value``."""
    out = out if out is not None else sys.stdout
    if fmt == "json":
        clean = {k: (None if isinstance(plain(v), float) and not math.isfinite(plain(v))
                     else plain(v)) for k, v in mapping.items()}
        out.write(json.dumps(clean, indent=2, default=str, allow_nan=False) + "\n")
        out.flush()
        return
    emit(Table(title, ["key", "value"], [[k, v] for k, v in mapping.items()], right={"value"}),
         fmt, out=out)
