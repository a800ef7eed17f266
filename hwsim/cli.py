"""The ``hwsim`` command line: thin subcommands over library calls.

``hwsim validate FILE...`` checks scenarios without running them; ``hwsim run FILE [--out DIR]``
simulates one and prints its summary; ``hwsim sweep FILE --out DIR`` runs a sweep's points;
``hwsim catalog [devices|links|storage]`` lists the hardware catalog. Exit status: 0 ok, 1 a user error (one paragraph on stderr, never a traceback), 2 usage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from hwsim.exceptions import HwsimError, ScenarioError

__all__ = ["app", "main"]

app = typer.Typer(
    name="hwsim",
    help="Simulate deep-learning jobs on compute, storage and network hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

_SECTIONS = ("devices", "links", "storage")


def _fail(err: HwsimError) -> typer.Exit:
    """Print *err* as one paragraph on stderr and return the exit to raise (status 1)."""
    typer.echo(f"error: {' '.join(str(err).split())}", err=True)
    return typer.Exit(1)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Scenario YAML files.", show_default=False)],
) -> None:
    """Check scenario files (schema, catalog ids, topology, job plan) without running them."""
    from hwsim.scenario.build import prepare
    from hwsim.scenario.loader import load_scenario

    failed = 0
    for path in files:
        try:
            scenario = load_scenario(path)
            prepare(scenario)
        except ScenarioError as err:  # errors found while building: add the file name
            err = ScenarioError(err.reason, file=err.file or str(path), field=err.field)
            typer.echo(f"error: {' '.join(str(err).split())}", err=True)
            failed += 1
            continue
        except HwsimError as err:
            typer.echo(f"error: {' '.join(str(err).split())}", err=True)
            failed += 1
            continue
        typer.echo(f"ok: {path} ({scenario.name})")
    if failed:
        raise typer.Exit(1)


def _bottleneck_line(result: Any) -> str | None:
    name = result.summary.get("bottleneck")
    frame = getattr(result, "bottleneck", None)
    if name is None and frame is not None and "job" in frame:  # a shared cluster: per job
        return None
    share = None
    if frame is not None and not frame.empty and {"category", "share"} <= set(frame.columns):
        rows = frame[frame["category"] == name] if name is not None else frame.nlargest(1, "share")
        if not rows.empty:
            name, share = rows["category"].iloc[0], float(rows["share"].iloc[0])
    if name is None:
        return None
    label = result.summary.get("bottleneck_label")
    line = f"bottleneck: {name}" + (f" ({share:.0%} of critical path)" if share is not None else "")
    return line + (f": {label}" if label and label != name else "")


def _breakdown_line(s: dict[str, Any]) -> str | None:
    """Rank 0's step by part (docs/model.md "Step breakdown by parallelism"), non-zero parts only:
    ``per step (rank 0): compute 797 ms (74.1%), comm tp 75.2 ms (7.0%), bubble 196 ms (18.2%)``."""
    from hwsim.analysis.parallelism import PARTS, summary_key
    from hwsim.units import format_quantity

    step = s.get("step_time_s")
    if not step:
        return None
    items = []
    for part in PARTS:
        t = s.get(summary_key(part))
        if t:  # None or 0: absent
            label = part.replace("exposed_comm_", "comm ").replace("_", " ")
            items.append(f"{label} {format_quantity(t, 's')} ({t / step:.1%})")
    return f"per step (rank 0): {', '.join(items)}" if items else None


def _headline(s: dict[str, Any]) -> str | None:
    """The answer in one line: time to train (training), latencies and throughput (serving) or
    makespan (transfers)."""
    from hwsim.units import format_quantity

    if s.get("fits") is False:
        return f"does not fit: {s.get('bottleneck_label', '')}"
    if s.get("time_to_train_s") is not None and s.get("step_time_s"):
        line = (f"time to train: {_duration(s['time_to_train_s'])} "
                f"({s['total_steps']:,} steps of {format_quantity(s['step_time_s'], 's')}, "
                f"{s['samples_per_s']:,.0f} samples/s, MFU {s['mfu']:.1%})")
        if s.get("goodput") is not None:  # a whole run with failures and checkpoints
            ideal = _duration(s["time_to_train_ideal_s"])
            line += (f"; {s['failures_total']:,} failures, {s['checkpoints']:,} checkpoints, "
                     f"goodput {s['goodput']:.1%} ({ideal} without them)")
        return line
    if s.get("ttft_p50_s") is not None:
        q = (f"{s['requests_completed']:,} requests served: "
             + ("TTFT" if s.get("tpot_p50_s") is not None else "latency") + " p50 "
             f"{format_quantity(s['ttft_p50_s'], 's')} / p99 {format_quantity(s['ttft_p99_s'], 's')}")
        if s.get("tpot_p50_s") is not None:
            q += (f", TPOT p50 {format_quantity(s['tpot_p50_s'], 's')} / p99 "
                  f"{format_quantity(s['tpot_p99_s'], 's')}")
        q += (f", {s['output_tokens_per_s']:,.0f} output tokens/s" if s.get("tpot_p50_s")
              is not None else f", {s['requests_per_s']:,.0f} responses/s")
        if s.get("slo_attainment") is not None:
            q += f", SLO met by {s['slo_attainment']:.1%}"
        return q
    if s.get("makespan_s") is not None:
        return (f"all transfers done in {_duration(s['makespan_s'])} "
                f"({format_quantity(s['bytes_moved'], 'B')} moved)")
    return None


def _per_job(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``job.<name>.<key>`` keys of a shared cluster's summary, per job."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in s.items():
        if key.startswith("job."):
            _, name, sub = key.split(".", 2)
            out.setdefault(name, {})[sub] = value
    return out


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Scenario YAML file.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the result files into "
                                                "this folder (replaced atomically).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
) -> None:
    """Simulate one scenario and print its summary (and save it with --out)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from hwsim.scenario.loader import load_scenario

    try:
        scenario = load_scenario(file)
        from hwsim.scenario.build import run_scenario

        result = run_scenario(scenario)
        if out is not None:
            result.save(out)
    except ScenarioError as err:  # errors found while building the run: add the file name
        err = ScenarioError(err.reason, file=err.file or str(file), field=err.field)
        raise _fail(err) from None
    except HwsimError as err:
        raise _fail(err) from None
    if quiet:
        return
    table = Table(title=escape(str(result.name)), show_header=True, header_style="bold")
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in result.summary.items():
        table.add_row(escape(str(key)), escape(_fmt(value)))
    console = Console(soft_wrap=True, highlight=False)
    console.print(table)
    for line in (_headline(result.summary), _breakdown_line(result.summary),
                 _bottleneck_line(result)):
        if line:
            typer.echo(line)
    for job, s in _per_job(result.summary).items():  # a shared cluster: a line per job
        line = _headline(s)
        if line:
            typer.echo(f"job {job}: {line}" + (f"; bottleneck: {s['bottleneck']}"
                                              if s.get("bottleneck") else ""))
    if out is not None:
        typer.echo(f"wrote {out}")


@app.command()
def catalog(
    section: Annotated[Literal["devices", "links", "storage"] | None, typer.Argument(
        help="devices, links or storage (default: all three).")] = None,
    fmt: Annotated[Literal["table", "json"], typer.Option("--format", "-f",
                                                          help="table or json.")] = "table",
) -> None:
    """List the hardware catalog: devices, links and storage tiers."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from hwsim.catalog import catalog_rows

    sections = [section] if section else list(_SECTIONS)
    try:
        data = {s: catalog_rows(s) for s in sections}
    except HwsimError as err:
        raise _fail(err) from None
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2, default=str, allow_nan=False))
        return
    console = Console(highlight=False)
    for name, rows in data.items():
        columns = list(dict.fromkeys(k for row in rows for k in row))
        table = Table(title=name, show_header=True, header_style="bold")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(escape(_fmt(row.get(c))) for c in columns))
        console.print(table)


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep YAML file (docs/sweeps.md).",
                                         show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.parquet; a rerun "
                                      "skips the points finished there.", show_default=False)],
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1, help="Local worker "
                                                "processes (default: one per CPU).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", envvar="HWSIM_SCHEDULER",
                                                  help="Run on this Dask scheduler "
                                                  "(tcp://HOST:PORT).")] = None,
) -> None:
    """Run every point of a sweep file into DIR/results.parquet (resumable)."""
    import contextlib
    import time
    import warnings

    from hwsim.planning.execute import read_results
    from hwsim.planning.execute import sweep as run_sweep
    from hwsim.planning.sweep import load_sweep, points

    try:
        from hwsim.progress import progress  # type: ignore[import-not-found]
    except ImportError:
        progress = None
    t0 = time.perf_counter()
    try:
        spec = load_sweep(file)
        ids = {p.id for p in points(spec)}
        done = len(ids & set(read_results(out)["id"])) if out.is_dir() else 0
        bar = (progress(total=len(ids) - done, label=f"sweep {spec.name}") if progress
               else contextlib.nullcontext())
        with bar as b, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = run_sweep(spec, out, workers=workers, scheduler=scheduler,
                              on_point=(lambda row: b.advance()) if progress else None)
    except HwsimError as err:
        raise _fail(err) from None
    for w in caught:
        typer.echo(f"warning: {' '.join(str(w.message).split())}", err=True)
    wall = time.perf_counter() - t0
    bad = table.loc[~table["feasible"].astype(bool), "reason"].astype(str)
    kinds = bad.str.extract(r"^(does not fit|constraint|scenario|error)")[0].value_counts()
    why = ", ".join(f"{k} {n}" for k, n in kinds.items())
    typer.echo(f"{len(table)} points ({done} already done): {len(table) - len(bad)} feasible, "
               f"{len(bad)} infeasible{f' ({why})' if why else ''}; "
               f"{len(ids) - done} new in {wall:.1f} s "
               f"({(len(ids) - done) / wall:.2f} points/s)")
    columns = list(table.columns)
    for obj in spec.objectives:
        best = table[table[f"rank_{obj.key}"] == 1]
        if not best.empty:
            row = best.iloc[0]
            inputs = ", ".join(f"{c}={_fmt(row[c])}" for c in columns[1:columns.index("feasible")])
            typer.echo(f"best {obj.key} ({obj.goal}): {_fmt(row[obj.key])} at {inputs}")
    typer.echo(f"wrote {out / 'results.parquet'}")


def main() -> None:
    """Run the command line (the ``hwsim`` entry point).

    An :class:`~hwsim.exceptions.HwsimError` that escapes a command becomes its one-paragraph
    message on stderr and exit status 1; other exceptions propagate.
    """
    try:
        app()
    except HwsimError as err:
        typer.echo(f"error: {' '.join(str(err).split())}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
