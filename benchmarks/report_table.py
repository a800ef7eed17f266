"""What the validation reports share: error statistics over the validated rows, and a table as
aligned text or Markdown (benchmarks/validate_training.py, benchmarks/validate_serving.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class Row:
    """One line of a validation report (each report adds its own columns)."""

    case: str
    family: str
    metric: str
    published: float
    predicted: float | None = None
    error: float | None = None      # predicted / published - 1
    role: str = "validated"
    note: str = ""                  # error text, or why the case did not run
    wall_s: float = 0.0


def stats(rows: Sequence[Any], within: float) -> dict[str, Any]:
    """Over the validated rows that ran (``role``, ``error`` attributes): how many, mean
    absolute error, and how many are within *within* (a fraction)."""
    errs = [abs(r.error) for r in rows if r.role == "validated" and r.error is not None]
    return {"validated_run": len(errs),
            "validated_total": sum(r.role == "validated" for r in rows),
            "mean_abs_error": sum(errs) / len(errs) if errs else None,
            "within": sum(e <= within for e in errs)}


def summary_line(rows: Sequence[Any], within: float) -> str:
    s = stats(rows, within)
    mae = f"{100 * s['mean_abs_error']:.1f} %" if s["mean_abs_error"] is not None else "n/a"
    return (f"Validated cases run: {s['validated_run']} of {s['validated_total']}; mean absolute "
            f"error {mae}; within {100 * within:.0f} %: {s['within']} of {s['validated_run']}. "
            f"Fitted cases: {sum(r.role == 'fitted' for r in rows)}.")


def table(head: list[str], body: list[list[str]], markdown: bool, left: set[int]) -> list[str]:
    """Lines of a table; columns in *left* are left-aligned, the others right-aligned."""
    if markdown:
        return (["| " + " | ".join(head) + " |",
                 "|" + "|".join("---" if i in left else "---:" for i in range(len(head))) + "|"]
                + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(head)] + [fmt(b) for b in body]
