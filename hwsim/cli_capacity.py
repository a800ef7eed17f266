"""``hwsim capacity train|serve``: the capacity questions of the command line (docs/planning.md),
thin commands over :func:`hwsim.cheapest_training`, :func:`hwsim.fewest_serving` and
:func:`hwsim.max_rate`; :mod:`hwsim.cli` adds them as its ``capacity`` group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hwsim.cli_common import (EXIT_DOES_NOT_FIT, EXIT_OK, FormatOption, _cells, _fail,
                              _print_frame)
from hwsim.exceptions import HwsimError, ScenarioError

__all__ = ["capacity_app"]

capacity_app = typer.Typer(help="Capacity questions: the cheapest cluster that trains a token "
                            "budget in time, the fewest devices that serve a rate within p99 "
                            "targets (docs/planning.md).", no_args_is_help=True)


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
    max_mw: Annotated[float | None, typer.Option("--max-mw", help="A site's power in MW "
                                                 "(facility, with the scenario's power.pue): a "
                                                 "candidate drawing more is not feasible.",
                                                 show_default=False)] = None,
    fmt: FormatOption = "table",
) -> None:
    """The cheapest device type and count that trains --tokens within --days (and within
    --max-mw of site power), each count with a parallel layout that fits in memory, and the
    Pareto front of time, cost and energy. Exit status 3 when no count fits in memory."""
    import hwsim

    devs, prices, wanted = _capacity_args(devices, price, counts)
    try:
        df = hwsim.cheapest_training(file, tokens, days, devices=devs, prices=prices,
                                     max_nodes=max_nodes, counts=wanted,
                                     search_layouts=not keep_layout, max_power_mw=max_mw)
        df = hwsim.pareto(df)
    except HwsimError as err:
        raise _capacity_fail(err, file) from None
    cols = ["device", "count", "layout", "memory_per_device_gb", "time_to_train_days",
            "cost_usd", "energy_kwh", "power_mw", "energy_mwh", "feasible", "pareto", "reason"]
    shown = _cells(df, (), {"memory_per_device_gb": "{:.3g}", "time_to_train_days": "{:.3g}",
                            "cost_usd": "{:,.0f}", "energy_kwh": "{:,.0f}",
                            "power_mw": "{:.3g}", "energy_mwh": "{:,.3g}"})
    shown["layout"] = [  # which layout each candidate simulated: the scenario's or searched
        "-" if not r["layout"] else f"tp{r['tp']} pp{r['pp']} dp{r['dp']} zero{r['zero']} "
        f"mb{r['micro_batch']} ({r['layout']})" for _, r in df.iterrows()]
    _answer(df, shown, f"train {tokens:.3g} tokens within {days:g} days", cols, fmt,
            EXIT_OK if df["fits"].any() else EXIT_DOES_NOT_FIT, "time, cost, energy", "count")


def _answer(df, shown, title: str, cols, fmt: str, status: int, front_of: str,
            count: str) -> None:
    """Print a capacity frame (*shown* in a table, *df* as data), then, for a table, the
    answer and the Pareto front over *front_of* (*count* devices of each kind); exit with
    *status*."""
    if _print_frame(df if fmt != "table" else shown, title, cols, fmt) == "table":
        typer.echo(f"answer: {df.attrs['answer']}")
        front = df[df["pareto"]]
        typer.echo(f"pareto front ({front_of}): " + ("; ".join(
            f"{int(r[count])} x {r['device']}" for _, r in front.iterrows()) or "none"))
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
            "cost_per_hour_usd", "energy_per_request_j", "power_mw", "feasible", "pareto",
            "reason"]
    shown = _cells(df, ("devices", "replicas", "tp"), {
        "ttft_p99_s": "{:.4g}", "tpot_p99_s": "{:.4g}", "cost_per_hour_usd": "{:,.2f}",
        "energy_per_request_j": "{:,.4g}", "power_mw": "{:.3g}"})
    shown["tp"] = [t if lay != "searched" else f"{t} (searched)"
                   for t, lay in zip(shown["tp"], df["layout"])]
    _answer(df, shown, f"serve {rate:g} req/s at p99 TTFT {ttft:g} s, TPOT {tpot:g} s", cols,
            fmt, EXIT_OK if df.attrs.get("fits", True) else EXIT_DOES_NOT_FIT,
            "cost per hour, energy per request", "devices")


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
