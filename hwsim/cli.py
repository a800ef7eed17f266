"""The ``hwsim`` command line: thin subcommands over library calls.

``hwsim validate FILE...`` checks scenarios without running them; ``hwsim run FILE [--out DIR]``
simulates one and prints its summary; ``hwsim report DIR`` writes a result directory's HTML
report; ``hwsim sweep FILE --out DIR`` runs a sweep's points; ``hwsim search FILE`` searches the
parallel layouts of a training scenario; ``hwsim capacity train|serve`` answers capacity
questions (docs/planning.md); ``hwsim catalog [devices|links|storage]`` lists the hardware
catalog.

Exit status: 0 success; 1 bad input (one paragraph on stderr, never a traceback); 2 usage (an
unknown option); 3 simulated, but the job does not fit (the summary and files are still written);
4 refused by the size/event budget (the estimate, the limit and how to raise it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from hwsim.cli_capacity import capacity_app
from hwsim.cli_common import EXIT_DOES_NOT_FIT, EXIT_OK, FormatOption, _fail, _status
from hwsim.exceptions import HwsimError, ScenarioError

__all__ = ["app", "main"]


app = typer.Typer(
    name="hwsim",
    help="Simulate deep-learning jobs on compute, storage and network hardware.\n\n"
         "Exit status: 0 success; 1 bad input; 2 usage; 3 simulated, but the job does not fit "
         "(summary and files still written); 4 refused by the size/event budget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

_SECTIONS = ("devices", "links", "storage")


def _run_output(result: Any, fmt: str, table: bool, out: Path | None) -> None:
    """What ``hwsim run`` prints: with ``--format table``, the answer first (the headline:
    time, throughput, step breakdown, bottleneck and the phase it describes, fits; a line per job
    of a shared cluster), then the whole summary as a table with ``--verbose``/``--table``; with
    json or csv, the summary alone (``wrote DIR`` then goes to stderr)."""
    from hwsim.analysis.headline import headline
    from hwsim.tables import emit_mapping

    if fmt != "table":
        emit_mapping(str(result.name), result.summary, fmt)
    else:
        typer.echo(str(result.name))
        for line in headline(result.summary, result.config):
            typer.echo(line)
        if table:
            typer.echo("")
            emit_mapping("summary", result.summary, fmt)
    if out is not None:
        typer.echo(f"wrote {out}", err=fmt != "table")


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Scenario YAML files.", show_default=False)],
    max_events: Annotated[int | None, typer.Option(
        "--max-events", min=1, help="Event budget: refuse (exit 4) a scenario estimated to need "
        "more events (default: its limits.max_events, else 2,000,000).")] = None,
) -> None:
    """Check scenario files (schema, catalog ids, topology, job plan) without running them."""
    from hwsim.scenario.build import prepare
    from hwsim.scenario.loader import load_scenario

    status = EXIT_OK
    for path in files:
        try:
            scenario = load_scenario(path)
            prepare(scenario, max_events=max_events)
        except HwsimError as err:
            if isinstance(err, ScenarioError):  # errors found while building: add the file name
                err = ScenarioError(err.reason, file=err.file or str(path), field=err.field)
            typer.echo(f"error: {' '.join(str(err).split())}", err=True)
            status = max(status, _status(err))
            continue
        typer.echo(f"ok: {path} ({scenario.name})")
    if status:
        raise typer.Exit(status)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Scenario YAML file.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the result files into "
                                                "this folder (replaced atomically).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success (and "
                                          "no progress bar).")] = False,
    max_events: Annotated[int | None, typer.Option(
        "--max-events", min=1, help="Event budget: refuse (exit 4) a scenario estimated to need "
        "more events (default: its limits.max_events, else 2,000,000).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", "--table", help="After the answer, "
                                          "print every summary key as a table.")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Simulate one scenario and print the answer: time, throughput, bottleneck, fits (and
    save it with --out). --verbose adds the whole summary; --format json|csv prints only the
    summary, for scripts.

    On a terminal a progress bar (stderr) counts the steps or requests simulated; none in a pipe,
    with --quiet or with HWSIM_PROGRESS=0."""
    from contextlib import nullcontext

    from hwsim.heap import frozen_heap
    from hwsim.scenario.loader import load_scenario

    stage = None
    with frozen_heap():  # the modules loaded: out of the collector's passes from here
        try:
            if out is not None:  # before simulating: a bad --out must not cost the result
                from hwsim.analysis.export import Staging
                stage = Staging(out)  # the run streams its events here; renamed at the end
            scenario = load_scenario(file)
            from hwsim.scenario.build import run_scenario

            from hwsim.progress import silenced

            with silenced() if quiet else nullcontext():
                result = run_scenario(scenario, max_events=max_events,
                                      spill=stage.spill if stage is not None else None)
            if stage is not None:
                stage, committing = None, stage
                committing.commit(result)
        except ScenarioError as err:  # errors found while building the run: add the file name
            err = ScenarioError(err.reason, file=err.file or str(file), field=err.field)
            raise _fail(err) from None
        except HwsimError as err:
            raise _fail(err) from None
        finally:
            if stage is not None:  # failed or interrupted before the commit: nothing is left
                stage.abort()
    status = EXIT_DOES_NOT_FIT if result.summary.get("fits") is False else EXIT_OK
    if quiet:
        raise typer.Exit(status)
    _run_output(result, fmt, verbose, out)
    raise typer.Exit(status)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A result directory (hwsim run --out DIR).",
                                            show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the HTML here instead "
                                                "of RUN_DIR/report.html.")] = None,
) -> None:
    """Write a self-contained HTML report (summary, plots, bottlenecks, memory, configuration)."""
    from hwsim.analysis.report import write_report

    try:
        path = write_report(run_dir, out)
    except HwsimError as err:
        raise _fail(err) from None
    except OSError as err:  # e.g. --out in a folder that does not exist
        raise _fail(HwsimError(f"cannot write the report: {err}")) from None
    typer.echo(f"wrote {path}")


@app.command()
def catalog(
    section: Annotated[Literal["devices", "links", "storage"] | None, typer.Argument(
        help="devices, links or storage (default: all three).")] = None,
    fmt: FormatOption = "table",
) -> None:
    """List the hardware catalog: devices, links and storage tiers."""
    from hwsim.catalog import catalog_rows
    from hwsim.tables import Table, emit

    sections = [section] if section else list(_SECTIONS)
    try:
        data = {s: catalog_rows(s) for s in sections}
    except HwsimError as err:
        raise _fail(err) from None
    emit([Table.from_records(name, rows) for name, rows in data.items()], fmt, key_by_title=True)


@app.command()
def search(
    file: Annotated[Path, typer.Argument(help="Training scenario YAML file.", show_default=False)],
    budget: Annotated[str, typer.Option("--budget", "-b", help="Memory-feasible layouts to "
                                        "simulate, best analytic estimate first: a number, or "
                                        "'all' to simulate every layout that fits.")] = "32",
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="Rows to print.")] = 10,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write every candidate's row "
                                             "(CSV, or Parquet for .parquet).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1,
                                         help="Processes simulating in parallel.")] = 1,
    fmt: FormatOption = "table",
) -> None:
    """Search the parallel layouts of a training scenario; print the best and why the
    runner-up loses (docs/planning.md, "Parallelism search")."""
    from hwsim.tables import Table, emit

    from hwsim.planning.search import LAYOUT, explain
    from hwsim.planning.search import search as run_search

    try:
        frame = run_search(file, budget=int(budget) if budget.strip().lstrip("+-").isdigit()
                           else budget.strip(), workers=workers)
    except ScenarioError as err:
        err = ScenarioError(err.reason, file=err.file or str(file), field=err.field)
        raise _fail(err) from None
    except HwsimError as err:
        raise _fail(err) from None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        if out.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        tmp.replace(out)
    columns = [c for c in LAYOUT if c != "torus_order" or frame[c].notna().any()] + [
        "status", "step_time_s", "model_tflops_per_gpu", "mfu", "memory_per_device_gb",
        "estimate_step_time_s"]
    emit(Table.from_frame(f"parallelism search: {file}", frame.head(top), columns), fmt)
    if fmt == "table":
        typer.echo(explain(frame))
    if out is not None:
        typer.echo(f"wrote {out}", err=fmt != "table")


app.add_typer(capacity_app, name="capacity")


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
    from hwsim.tables import cell
    from hwsim.planning.sweep import load_sweep, points

    try:
        from hwsim.progress import progress  # type: ignore[import-not-found]
    except ImportError:
        progress = None
    t0 = time.perf_counter()
    try:
        spec = load_sweep(file)
        from hwsim.planning.execute import check_sweep_out
        check_sweep_out(out, spec)  # before anything runs: another sweep's or a foreign folder
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
            inputs = ", ".join(f"{c}={cell(row[c])}" for c in columns[1:columns.index("feasible")])
            typer.echo(f"best {obj.key} ({obj.goal}): {cell(row[obj.key])} at {inputs}")
    typer.echo(f"wrote {out / 'results.parquet'}")


@app.command()
def calibrate(
    runs: Annotated[Path | None, typer.Option(
        "--runs", help="Table of measured runs (CSV or YAML: scenario, and one of step_time_s, "
        "tokens_per_s, samples_per_s).")] = None,
    nccl: Annotated[list[Path] | None, typer.Option(
        "--nccl", help="nccl-tests output (all_reduce_perf ...), measured on --scenario's "
        "cluster (repeatable).")] = None,
    trace: Annotated[list[Path] | None, typer.Option(
        "--trace", help="PyTorch profiler (Kineto) trace JSON of one training step "
        "(repeatable).")] = None,
    scenario: Annotated[Path | None, typer.Option(
        "--scenario", help="Scenario whose cluster the nccl-tests output and traces were "
        "measured on.")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="Catalog id of the device the traces ran on (default: --scenario's "
        "accelerator).")] = None,
    fit: Annotated[list[str] | None, typer.Option(
        "--fit", help="Constant the runs fit: ID:constant (a device or link), "
        "stack:NAME:constant, or a device or stack constant's name for every device or stack of "
        "the runs (repeatable; default compute_factor, of the stacks the runs run).")] = None,
    nccl_op: Annotated[str | None, typer.Option(
        "--nccl-op", help="Collective of nccl-tests output that does not name it (allreduce, "
        "allgather, reduce_scatter, alltoall, broadcast, sendrecv).")] = None,
    algorithm: Annotated[str, typer.Option(
        "--algorithm", help="Collective algorithm nccl-tests ran (auto: NCCL's choice; ring, "
        "tree, nvls with NCCL_ALGO).")] = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help="Calibration file to write.")] = Path(
        "calibration.yaml"),
    no_loo: Annotated[bool, typer.Option(
        "--no-loo", help="Skip leave-one-out cross-validation (faster).")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Fit model constants to your own measurements (measured runs, nccl-tests output, Kineto
    traces) and write a calibration file for scenarios to name (calibration: FILE); prints each
    constant and every row's error before and after, with leave-one-out cross-validation."""
    from hwsim.calibration.core import calibrate as fit_constants

    try:
        result = fit_constants(runs=runs, nccl=nccl or (), traces=trace or (),
                               scenario=scenario, device=device, fit=fit, nccl_op=nccl_op,
                               algorithm=algorithm, out=out, cross_validate=not no_loo)
    except HwsimError as err:
        raise _fail(err) from None
    except OSError as err:
        raise _fail(HwsimError(f"cannot write the calibration file: {err}")) from None
    from hwsim.tables import Table, emit

    emit([Table.from_records(title, records) for title, records in result.tables().items()],
         fmt, key_by_title=True)
    typer.echo(f"wrote {out}", err=fmt != "table")


def main() -> None:
    """Run the command line (the ``hwsim`` entry point).

    An :class:`~hwsim.exceptions.HwsimError` that escapes a command becomes its one-paragraph
    message on stderr and exit status 1; other exceptions propagate.
    """
    try:
        app()
    except HwsimError as err:
        typer.echo(f"error: {' '.join(str(err).split())}", err=True)
        raise SystemExit(_status(err)) from None


def entry() -> None:
    """The ``hwsim`` console script and ``python -m hwsim.cli``: :func:`main`, with the cyclic
    collector off until a command simulates (:func:`hwsim.heap.pause_collection`); after
    ``run`` and ``validate``, the process then ends without tearing its objects down
    (``os._exit`` once stdout and stderr are flushed: a large run's hundreds of MB of objects
    take 0.3 s to free, and the interpreter's last full collection pass 0.02 s, the process's
    last act). Nothing is lost: ``run`` has written and renamed its result folder and printed
    its answer before, ``validate`` only prints; no other command ends this way."""
    import os
    import sys

    from hwsim.heap import pause_collection

    pause_collection()
    try:
        main()
        code: object = 0
    except SystemExit as exit:
        code = exit.code
    if sys.argv[1:2] not in (["run"], ["validate"]) or not (code is None or isinstance(code, int)):
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    entry()
