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

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from hwsim.exceptions import BudgetError, HwsimError, ScenarioError

__all__ = ["app", "main"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT, EXIT_BUDGET = 0, 1, 3, 4

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


def _status(err: HwsimError) -> int:
    """The exit status of *err*: 4 for a budget refusal, 1 for any other error."""
    return EXIT_BUDGET if isinstance(err, BudgetError) else EXIT_BAD_INPUT


def _fail(err: HwsimError) -> typer.Exit:
    """Print *err* as one paragraph on stderr and return the exit to raise (1, or 4 for a
    budget refusal)."""
    typer.echo(f"error: {' '.join(str(err).split())}", err=True)
    return typer.Exit(_status(err))


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

    status = EXIT_OK
    for path in files:
        try:
            scenario = load_scenario(path)
            prepare(scenario)
        except HwsimError as err:
            if isinstance(err, ScenarioError):  # errors found while building: add the file name
                err = ScenarioError(err.reason, file=err.file or str(path), field=err.field)
            typer.echo(f"error: {' '.join(str(err).split())}", err=True)
            status = max(status, _status(err))
            continue
        typer.echo(f"ok: {path} ({scenario.name})")
    if status:
        raise typer.Exit(status)


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success (and "
                                          "no progress bar).")] = False,
) -> None:
    """Simulate one scenario and print its summary (and save it with --out).

    On a terminal a progress bar (stderr) counts the steps or requests simulated; none in a pipe,
    with --quiet or with HWSIM_PROGRESS=0."""
    from contextlib import nullcontext
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from hwsim.scenario.loader import load_scenario

    try:
        if out is not None:  # before simulating: a bad --out must not cost the result
            from hwsim.analysis.export import check_out_dir
            check_out_dir(out, "run")
        scenario = load_scenario(file)
        from hwsim.scenario.build import run_scenario

        from hwsim.progress import silenced

        with silenced() if quiet else nullcontext():
            result = run_scenario(scenario)
        if out is not None:
            result.save(out)
    except ScenarioError as err:  # errors found while building the run: add the file name
        err = ScenarioError(err.reason, file=err.file or str(file), field=err.field)
        raise _fail(err) from None
    except HwsimError as err:
        raise _fail(err) from None
    status = EXIT_DOES_NOT_FIT if result.summary.get("fits") is False else EXIT_OK
    if quiet:
        raise typer.Exit(status)
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
def search(
    file: Annotated[Path, typer.Argument(help="Training scenario YAML file.", show_default=False)],
    budget: Annotated[int, typer.Option("--budget", "-b", min=1, help="Memory-feasible layouts "
                                        "to simulate, best analytic estimate first.")] = 32,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="Rows to print.")] = 10,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write every candidate's row "
                                             "(CSV, or Parquet for .parquet).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1,
                                         help="Processes simulating in parallel.")] = 1,
) -> None:
    """Search the parallel layouts of a training scenario; print the best and why the
    runner-up loses (docs/planning.md, "Parallelism search")."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from hwsim.planning.search import LAYOUT, explain
    from hwsim.planning.search import search as run_search

    try:
        frame = run_search(file, budget=budget, workers=workers)
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
    columns = list(LAYOUT) + ["status", "step_time_s", "model_tflops_per_gpu", "mfu",
                              "memory_per_device_gb", "estimate_step_time_s"]
    table = Table(title=escape(f"parallelism search: {file}"), header_style="bold")
    for c in columns:
        table.add_column(c.replace("_per_", "/").replace("_s", " s").replace("_", " "),
                         justify="left" if c in ("recompute", "status") else "right")
    for _, row in frame.head(top).iterrows():
        table.add_row(*(escape(_fmt(None if isinstance(row[c], float) and math.isnan(row[c])
                                    else row[c])) for c in columns))
    Console(soft_wrap=True, highlight=False).print(table)
    typer.echo(explain(frame))
    if out is not None:
        typer.echo(f"wrote {out}")


capacity_app = typer.Typer(help="Capacity questions: the cheapest cluster that trains a token "
                            "budget in time, the fewest devices that serve a rate within p99 "
                            "targets (docs/planning.md).", no_args_is_help=True)
app.add_typer(capacity_app, name="capacity")


def _capacity_args(devices: str | None, price: list[str] | None) -> tuple[list[str] | None,
                                                                            dict[str, float]]:
    """``--devices A,B`` and ``--price ID=USD_PER_H`` as a list and a mapping."""
    prices: dict[str, float] = {}
    for item in price or []:
        dev, sep, value = item.partition("=")
        try:
            prices[dev.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not dev.strip():
            raise _fail(ScenarioError(f"--price {item!r}: expected ID=USD_PER_H, e.g. "
                                      "--price A100-PCIe-80GB=2.5"))
    devs = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
    return devs, prices


def _print_frame(df: Any, title: str, columns: list[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), show_header=True, header_style="bold")
    for c in columns:
        table.add_column(c, overflow="fold")
    for row in df[columns].itertuples(index=False):
        table.add_row(*(escape(_fmt(v.item() if hasattr(v, "item") else v)) for v in row))
    Console(soft_wrap=True, highlight=False).print(table)


@capacity_app.command("train")
def capacity_train(
    file: Annotated[Path, typer.Argument(help="Training scenario YAML (the base layout).",
                                         show_default=False)],
    tokens: Annotated[float, typer.Option("--tokens", help="Tokens to train.",
                                          show_default=False)],
    days: Annotated[float, typer.Option("--days", help="Deadline in days.", show_default=False)],
    devices: Annotated[str | None, typer.Option("--devices", help="Comma-separated catalog "
                                                "device ids (default: the scenario's).")] = None,
    price: Annotated[list[str] | None, typer.Option("--price", help="ID=USD_PER_H, overrides "
                                                    "the catalog price (repeatable).")] = None,
    max_nodes: Annotated[int, typer.Option("--max-nodes", help="Largest server count tried.")
                         ] = 64,
) -> None:
    """The cheapest device type and count that trains --tokens within --days, and the Pareto
    front of time, cost and energy."""
    import hwsim

    devs, prices = _capacity_args(devices, price)
    try:
        df = hwsim.cheapest_training(file, tokens, days, devices=devs, prices=prices,
                                     max_nodes=max_nodes)
        df = hwsim.pareto(df)
    except ScenarioError as err:
        raise _fail(ScenarioError(err.reason, file=err.file or str(file), field=err.field)
                    ) from None
    except HwsimError as err:
        raise _fail(err) from None
    cols = ["device", "count", "dp", "micro_batch", "time_to_train_days", "cost_usd",
            "energy_kwh", "feasible", "pareto", "reason"]
    shown = df.astype({"cost_usd": object, "energy_kwh": object, "time_to_train_days": object})
    for c, f in (("cost_usd", "{:,.0f}"), ("energy_kwh", "{:,.0f}"),
                 ("time_to_train_days", "{:.3g}")):
        shown[c] = [f.format(v) if v == v else "-" for v in df[c]]
    _print_frame(shown, f"train {tokens:.3g} tokens within {days:g} days", cols)
    best = df[df["answer"]]
    if best.empty:
        typer.echo(f"answer: no candidate trains {tokens:.3g} tokens within {days:g} days")
    else:
        b = best.iloc[0]
        typer.echo(f"answer: {int(b['count'])} x {b['device']} ({int(b['nodes'])} servers, dp "
                   f"{int(b['dp'])}): {b['time_to_train_days']:.1f} days, "
                   f"${b['cost_usd']:,.0f}, {b['energy_kwh']:,.0f} kWh")
    front = df[df["pareto"]]
    typer.echo("pareto front (time, cost, energy): " + ("; ".join(
        f"{int(r['count'])} x {r['device']}" for _, r in front.iterrows()) or "none"))


@capacity_app.command("serve")
def capacity_serve(
    file: Annotated[Path, typer.Argument(help="Inference scenario YAML (the replica layout).",
                                         show_default=False)],
    rate: Annotated[float, typer.Option("--rate", help="Requests per second.",
                                        show_default=False)],
    ttft: Annotated[float, typer.Option("--ttft", help="p99 time to first token target (s).",
                                        show_default=False)],
    tpot: Annotated[float, typer.Option("--tpot", help="p99 time per output token target (s).",
                                        show_default=False)],
    devices: Annotated[str | None, typer.Option("--devices", help="Comma-separated catalog "
                                                "device ids (default: the scenario's).")] = None,
    price: Annotated[list[str] | None, typer.Option("--price", help="ID=USD_PER_H, overrides "
                                                    "the catalog price (repeatable).")] = None,
    requests: Annotated[int | None, typer.Option("--requests", help="Requests simulated per "
                                                 "trial (default: the scenario's).")] = None,
    max_replicas: Annotated[int, typer.Option("--max-replicas", help="Most replicas tried.")
                            ] = 64,
) -> None:
    """For each device type, the fewest devices that serve --rate within both p99 targets,
    with cost per hour and energy per request, and their Pareto front."""
    import hwsim

    devs, prices = _capacity_args(devices, price)
    try:
        df = hwsim.fewest_serving(file, rate, ttft, tpot, devices=devs, prices=prices,
                                  requests=requests, max_replicas=max_replicas)
        df = hwsim.pareto(df, {"cost_per_hour_usd": "min", "energy_per_request_j": "min"})
    except ScenarioError as err:
        raise _fail(ScenarioError(err.reason, file=err.file or str(file), field=err.field)
                    ) from None
    except HwsimError as err:
        raise _fail(err) from None
    cols = ["device", "devices", "replicas", "tp", "ttft_p99_s", "tpot_p99_s",
            "cost_per_hour_usd", "energy_per_request_j", "feasible", "pareto", "reason"]
    _print_frame(df, f"serve {rate:g} req/s at p99 TTFT {ttft:g} s, TPOT {tpot:g} s", cols)
    ok = df[df["feasible"]]
    if ok.empty:
        typer.echo("answer: no device type meets both targets")
    else:
        b = ok.sort_values("cost_per_hour_usd", kind="stable").iloc[0]
        typer.echo(f"answer: {int(b['devices'])} x {b['device']} ({int(b['replicas'])} "
                   f"replicas): ${b['cost_per_hour_usd']:,.2f}/h, "
                   f"{b['energy_per_request_j']:,.0f} J per request")
    front = df[df["pareto"]]
    typer.echo("pareto front (cost per hour, energy per request): " + ("; ".join(
        f"{int(r['devices'])} x {r['device']}" for _, r in front.iterrows()) or "none"))


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
        raise SystemExit(_status(err)) from None


if __name__ == "__main__":
    main()
