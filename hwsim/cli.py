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


FormatOption = Annotated[Literal["table", "json", "csv"], typer.Option(
    "--format", "-f", help="table (text that fits the terminal), json or csv.")]


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

    from hwsim.scenario.loader import load_scenario

    try:
        if out is not None:  # before simulating: a bad --out must not cost the result
            from hwsim.analysis.export import check_out_dir
            check_out_dir(out, "run")
        scenario = load_scenario(file)
        from hwsim.scenario.build import run_scenario

        from hwsim.progress import silenced

        with silenced() if quiet else nullcontext():
            result = run_scenario(scenario, max_events=max_events)
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
    budget: Annotated[int, typer.Option("--budget", "-b", min=1, help="Memory-feasible layouts "
                                        "to simulate, best analytic estimate first.")] = 32,
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
    emit(Table.from_frame(f"parallelism search: {file}", frame.head(top), columns), fmt)
    if fmt == "table":
        typer.echo(explain(frame))
    if out is not None:
        typer.echo(f"wrote {out}", err=fmt != "table")


capacity_app = typer.Typer(help="Capacity questions: the cheapest cluster that trains a token "
                            "budget in time, the fewest devices that serve a rate within p99 "
                            "targets (docs/planning.md).", no_args_is_help=True)
app.add_typer(capacity_app, name="capacity")


def _capacity_args(devices: str | None, price: list[str] | None, counts: str | None = None
                   ) -> tuple[list[str] | None, dict[str, float], list[int] | None]:
    """``--devices A,B``, ``--price ID=USD_PER_H`` and ``--counts 64,128`` as a list, a mapping
    and a list of positive integers (None when not given)."""
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
    wanted: list[int] | None = None
    if counts is not None:
        wanted = []
        for item in (c.strip() for c in counts.split(",")):
            bad = "" if item.isdigit() and int(item) > 0 else (
                "an empty count" if not item else f"{item!r} is not a whole number > 0")
            if bad:
                raise _fail(ScenarioError(
                    f"--counts {counts!r}: {bad}; valid: comma-separated device counts, each "
                    "a positive whole number of devices that fills whole servers (a multiple "
                    "of the scenario's gpus_per_node), e.g. --counts 64,128,256"))
            wanted.append(int(item))
    return devs, prices, wanted


_CAPACITY_OPTIONS = {"counts": "--counts", "max_nodes": "--max-nodes", "max_replicas":
                     "--max-replicas", "train_tokens": "--tokens", "days": "--days",
                     "rate_per_s": "--rate", "ttft_p99_s": "--ttft", "tpot_p99_s": "--tpot",
                     "prices": "--price", "ttft_s": "--ttft", "tpot_s": "--tpot",
                     "percentile": "--percentile", "rel_tol": "--tolerance",
                     "requests": "--requests"}


def _capacity_fail(err: HwsimError, file: Path) -> typer.Exit:
    """*err* as one paragraph naming *file*, and the option for a field given on the command
    line (``counts`` -> ``--counts``)."""
    if isinstance(err, ScenarioError):
        field = _CAPACITY_OPTIONS.get(err.field or "", err.field)
        err = ScenarioError(err.reason, file=err.file or str(file), field=field)
    return _fail(err)


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
    max_nodes: Annotated[int, typer.Option("--max-nodes", help="Largest server count tried "
                                           "(1, 2, 4, ... servers).")] = 64,
    counts: Annotated[str | None, typer.Option("--counts", help="Comma-separated device counts "
                                               "to try instead, whole servers (e.g. "
                                               "64,128,256).", show_default=False)] = None,
    keep_layout: Annotated[bool, typer.Option("--keep-layout", help="Simulate only the "
                                              "scenario's own layout (tp, pp, ZeRO, recompute); "
                                              "default: where it does not run or fit, the "
                                              "fitting layout with the least model parallelism."
                                              )] = False,
    fmt: FormatOption = "table",
) -> None:
    """The cheapest device type and count that trains --tokens within --days, each count with a
    parallel layout that fits in memory, and the Pareto front of time, cost and energy. Exit
    status 3 when no count fits in memory."""
    import hwsim

    devs, prices, wanted = _capacity_args(devices, price, counts)
    try:
        df = hwsim.cheapest_training(file, tokens, days, devices=devs, prices=prices,
                                     max_nodes=max_nodes, counts=wanted,
                                     search_layouts=not keep_layout)
        df = hwsim.pareto(df)
    except HwsimError as err:
        raise _capacity_fail(err, file) from None
    cols = ["device", "count", "layout", "memory_per_device_gb", "time_to_train_days",
            "cost_usd", "energy_kwh", "feasible", "pareto", "reason"]
    shown = _cells(df, (), {"memory_per_device_gb": "{:.3g}", "time_to_train_days": "{:.3g}",
                            "cost_usd": "{:,.0f}", "energy_kwh": "{:,.0f}"})
    shown["layout"] = [  # which layout each candidate simulated: the scenario's or searched
        "-" if not r["layout"] else f"tp{r['tp']} pp{r['pp']} dp{r['dp']} zero{r['zero']} "
        f"mb{r['micro_batch']} ({r['layout']})" for _, r in df.iterrows()]
    status = EXIT_OK if df["fits"].any() else EXIT_DOES_NOT_FIT
    if _print_frame(df if fmt != "table" else shown,
                    f"train {tokens:.3g} tokens within {days:g} days", cols, fmt) != "table":
        raise typer.Exit(status)
    typer.echo(f"answer: {df.attrs['answer']}")
    front = df[df["pareto"]]
    typer.echo("pareto front (time, cost, energy): " + ("; ".join(
        f"{int(r['count'])} x {r['device']}" for _, r in front.iterrows()) or "none"))
    raise typer.Exit(status)


@capacity_app.command("serve")
def capacity_serve(
    file: Annotated[Path, typer.Argument(help="Inference scenario YAML (the replica layout).",
                                         show_default=False)],
    rate: Annotated[float | None, typer.Option("--rate", help="Requests per second: the "
                                               "fewest devices that serve it.",
                                               show_default=False)] = None,
    max_rate: Annotated[bool, typer.Option("--max-rate", help="Instead of --rate: the highest "
                                           "arrival rate the scenario's replicas serve within "
                                           "the targets, its knee and the trials.")] = False,
    ttft: Annotated[float | None, typer.Option("--ttft", help="Time to first token target (s)"
                                               " at the percentile (p99 with --rate).",
                                               show_default=False)] = None,
    tpot: Annotated[float | None, typer.Option("--tpot", help="Time per output token target "
                                               "(s) at the percentile (p99 with --rate).",
                                               show_default=False)] = None,
    percentile: Annotated[float | None, typer.Option(
        "--percentile", help="With --max-rate: the percentile of the targets (default 99).",
        show_default=False)] = None,
    tolerance: Annotated[float | None, typer.Option(
        "--tolerance", help="With --max-rate: the relative tolerance of the rate found "
        "(default 0.02).", show_default=False)] = None,
    devices: Annotated[str | None, typer.Option("--devices", help="Comma-separated catalog "
                                                "device ids (default: the scenario's).")] = None,
    price: Annotated[list[str] | None, typer.Option("--price", help="ID=USD_PER_H, overrides "
                                                    "the catalog price (repeatable).")] = None,
    requests: Annotated[int | None, typer.Option("--requests", help="Requests simulated per "
                                                 "trial (default: the scenario's).")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", help="Most replicas "
                                                     "tried (default 64).",
                                                     show_default=False)] = None,
    keep_layout: Annotated[bool, typer.Option("--keep-layout", help="Keep the scenario's tp "
                                              "even where a replica does not fit in memory "
                                              "(default: double tp until it fits).")] = False,
    fmt: FormatOption = "table",
) -> None:
    """For each device type, the fewest devices that serve --rate within both p99 targets,
    with cost per hour and energy per request, and their Pareto front; or, with --max-rate,
    the highest arrival rate at which the scenario meets --ttft and/or --tpot at --percentile.
    Exit status 3 when no replica fits in memory (on any device type)."""
    import hwsim

    def usage(msg: str) -> typer.Exit:
        return _fail(ScenarioError(msg, file=str(file)))

    if max_rate:
        given = [o for o, v in (("--rate", rate), ("--devices", devices), ("--price", price),
                                ("--max-replicas", max_replicas),
                                ("--keep-layout", keep_layout or None)) if v is not None]
        if given:
            raise usage(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply "
                        "to --max-rate, which searches the rate the scenario's own replicas "
                        "serve; valid: --max-rate with --ttft and/or --tpot [--percentile P] "
                        "[--tolerance T] [--requests N], or --rate R with --ttft and --tpot")
        if ttft is None and tpot is None:
            raise usage("--max-rate needs a target: --ttft S and/or --tpot S (seconds), e.g. "
                        "--max-rate --ttft 1 --tpot 0.05")
        _capacity_max_rate(file, ttft, tpot, percentile, tolerance, requests, fmt)
    if rate is None:
        raise usage("give --rate R (the fewest devices that serve R requests/s within p99 "
                    "targets) or --max-rate (the highest rate the scenario's replicas serve "
                    "within targets), e.g. --rate 40 --ttft 1 --tpot 0.05")
    missing = [o for o, v in (("--ttft", ttft), ("--tpot", tpot)) if v is None]
    given = [o for o, v in (("--percentile", percentile), ("--tolerance", tolerance))
             if v is not None]
    if missing or given:
        raise usage((f"--rate needs {' and '.join(missing)} (p99 targets in seconds)"
                     if missing else f"{', '.join(given)} applies to --max-rate only")
                    + "; valid: --rate R --ttft S --tpot S, or --max-rate with --ttft and/or "
                    "--tpot [--percentile P] [--tolerance T]")
    devs, prices, _ = _capacity_args(devices, price)
    try:
        df = hwsim.fewest_serving(file, rate, ttft, tpot, devices=devs, prices=prices,
                                  requests=requests,
                                  max_replicas=64 if max_replicas is None else max_replicas,
                                  search_layouts=not keep_layout)
        df = hwsim.pareto(df, {"cost_per_hour_usd": "min", "energy_per_request_j": "min"})
    except HwsimError as err:
        raise _capacity_fail(err, file) from None
    cols = ["device", "devices", "replicas", "tp", "ttft_p99_s", "tpot_p99_s",
            "cost_per_hour_usd", "energy_per_request_j", "feasible", "pareto", "reason"]
    shown = _cells(df, ("devices", "replicas", "tp"), {
        "ttft_p99_s": "{:.4g}", "tpot_p99_s": "{:.4g}", "cost_per_hour_usd": "{:,.2f}",
        "energy_per_request_j": "{:,.4g}"})
    shown["tp"] = [t if lay != "searched" else f"{t} (searched)"
                   for t, lay in zip(shown["tp"], df["layout"])]
    status = EXIT_OK if df.attrs.get("fits", True) else EXIT_DOES_NOT_FIT
    if _print_frame(df if fmt != "table" else shown,
                    f"serve {rate:g} req/s at p99 TTFT {ttft:g} s, TPOT {tpot:g} s", cols,
                    fmt) != "table":
        raise typer.Exit(status)
    typer.echo(f"answer: {df.attrs['answer']}")
    front = df[df["pareto"]]
    typer.echo("pareto front (cost per hour, energy per request): " + ("; ".join(
        f"{int(r['devices'])} x {r['device']}" for _, r in front.iterrows()) or "none"))
    raise typer.Exit(status)


def _capacity_max_rate(file: Path, ttft: float | None, tpot: float | None,
                       percentile: float | None, tolerance: float | None,
                       requests: int | None, fmt: str) -> None:
    """``hwsim capacity serve --max-rate``: the trials table, then (``table``) the max rate,
    the knee, the saturation throughput and the answer; json/csv: the result's fields as one
    row (``max_rate``) and the trials (``trials``). Exits 0, or 3 when a replica does not fit
    in memory."""
    import hwsim
    from hwsim.planning.saturation import KNEE_REFERENCE_LOAD
    from hwsim.tables import Table, emit

    try:
        res = hwsim.max_rate(file, ttft_s=ttft, tpot_s=tpot,
                             percentile=99 if percentile is None else percentile,
                             rel_tol=0.02 if tolerance is None else tolerance,
                             requests=requests)
    except HwsimError as err:
        raise _capacity_fail(err, file) from None
    status = EXIT_DOES_NOT_FIT if "does not fit in device memory" in res.reason else EXIT_OK
    df, tag = res.trials, f"p{res.percentile:g}"
    cols = ["role", "rate_per_s", f"ttft_{tag}_s", f"tpot_{tag}_s", "requests_per_s",
            "goodput_requests_per_s", "keep_up_ratio", "bottleneck", "meets", "reason"]
    targets = ", ".join(f"{m} {t:g} s" for m, t in (("TTFT", ttft), ("TPOT", tpot))
                        if t is not None)
    title = f"highest rate at {tag} {targets} (tolerance {res.rel_tol:g})"
    if fmt != "table":
        flat = res.as_dict()
        for part in ("low_load", "knee_reference"):
            flat.update({f"{part}_{k}": v for k, v in flat.pop(part).items()})
        emit([Table.from_records("max_rate", [flat]), Table.from_frame("trials", df, cols)],
             fmt, key_by_title=True)
        raise typer.Exit(status)
    shown = _cells(df, (), {c: "{:.4g}" for c in cols[1:7]})
    emit(Table.from_frame(title, shown, cols), fmt)
    if res.rate_per_s is not None:
        typer.echo(f"max rate: {res.rate_per_s:.4g} requests/s (a rate {1 + res.rel_tol:g}x "
                   f"higher misses: {res.limited_by})")
    else:
        typer.echo(f"max rate: none ({res.reason})")
    if res.knee_rate_per_s is not None:
        ref = res.knee_reference
        typer.echo(f"knee: {res.knee_rate_per_s:.4g} requests/s ({res.knee_metric.upper()} "
                   f"{tag} reaches {res.knee_factor:g}x its {ref[f'{res.knee_metric}_{tag}_s']:.4g}"
                   f" s at {ref['rate_per_s']:.4g} requests/s, {KNEE_REFERENCE_LOAD:g} of the "
                   "saturation throughput)")
    if res.saturation_rate_per_s is not None:
        typer.echo(f"saturation throughput: {res.saturation_rate_per_s:.4g} requests/s")
    typer.echo(f"answer: {res.answer}")
    raise typer.Exit(status)


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


if __name__ == "__main__":
    main()
