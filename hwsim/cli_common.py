"""What the ``hwsim`` command line's modules share (:mod:`hwsim.cli`, :mod:`hwsim.cli_capacity`):
exit statuses, the one-paragraph error exit, the ``--format`` option and table printing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from hwsim.exceptions import BudgetError, HwsimError

EXIT_OK, EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT, EXIT_BUDGET = 0, 1, 3, 4


def _status(err: HwsimError) -> int:
    """The exit status of *err*: 4 for a budget refusal, 1 for any other error."""
    return EXIT_BUDGET if isinstance(err, BudgetError) else EXIT_BAD_INPUT


def _fail(err: HwsimError) -> typer.Exit:
    """Print *err* as one paragraph on stderr and return the exit to raise (1, or 4 for a
    budget refusal)."""
    typer.echo(f"error: {' '.join(str(err).split())}", err=True)
    return typer.Exit(_status(err))


FormatOption = Annotated[Literal["table", "json", "csv"], typer.Option(
    "--format", "-f", help="table (text that fits the terminal), json or csv.")]


def _cells(df: Any, ints: tuple[str, ...], fmts: dict[str, str]) -> Any:
    """*df* with *ints* as whole numbers and *fmts* columns formatted, ``-`` where missing."""
    import pandas as pd

    shown = df.astype({c: object for c in (*ints, *fmts) if c in df})
    for c in ints:
        shown[c] = ["-" if pd.isna(v) else str(int(v)) for v in df[c]]
    for c, f in fmts.items():
        shown[c] = ["-" if pd.isna(v) else f.format(v) for v in df[c]]
    return shown


def _print_frame(df: Any, title: str, columns: list[str], fmt: str = "table") -> str:
    """Print *df*'s *columns* as a table in format *fmt*; returns *fmt* (the caller prints its
    answer lines only after a ``table``)."""
    from hwsim.tables import Table, emit

    emit(Table.from_frame(title, df, columns), fmt)
    return fmt
