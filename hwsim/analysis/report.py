"""The HTML report of a result directory: one self-contained file.

:func:`render_report` reads a directory written by ``hwsim run --out DIR`` (DESIGN.md "Results")
and returns one HTML page: inline CSS, plots as inline base64 PNG ``<img>``, no external URL and
no JavaScript. :func:`write_report` writes it atomically to ``DIR/report.html`` (``hwsim report
DIR``). The plots come from :mod:`hwsim.analysis.plots` and depend on what the run is: training
(utilization heatmap, step Gantt, bottleneck bars, memory), serving (latency CDFs, batch size
and KV cache over time, bottleneck, memory), transfers (utilization, bottleneck).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hwsim.analysis.export import atomic_write_text
from hwsim.analysis.headline import headline
from hwsim.exceptions import HwsimError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["render_report", "write_report", "run_kinds"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:72em;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;border-bottom:1px solid #ccc;
padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555} .headline{font-size:1.1em;background:#f4f7fb;
padding:.6em 1em;border-left:4px solid #0072B2}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em;max-height:40em}
.note{color:#666;font-size:.9em}
"""


def _read_frame(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / f"{name}.parquet"
    return _read(path, pd.read_parquet) if path.is_file() else None


def _read(path: Path, reader: Any) -> Any:
    """``reader(path)``; a damaged or truncated file is a one-paragraph HwsimError naming it."""
    try:
        return reader(path)
    except Exception as err:  # noqa: BLE001 - pyarrow, pandas and json raise many kinds
        detail = " ".join(str(err).split())[:200]
        raise HwsimError(f"cannot read {str(path)!r}: the file is damaged or truncated "
                         f"({type(err).__name__}: {detail}); write the result again with: hwsim "
                         f"run SCENARIO.yaml --out {path.parent}") from None


def _check_dir(run_dir: Path) -> dict[str, Any]:
    if not run_dir.exists():
        raise HwsimError(f"no result directory {str(run_dir)!r}: it does not exist; make one "
                         f"with: hwsim run SCENARIO.yaml --out {run_dir}")
    if not run_dir.is_dir() or not (run_dir / "summary.json").is_file():
        raise HwsimError(f"{str(run_dir)!r} is not an hwsim result directory: it has no "
                         "summary.json; give the folder written by: hwsim run SCENARIO.yaml "
                         "--out DIR")
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HwsimError(f"cannot read {str(run_dir / 'summary.json')!r}: {err}") from None
    if not isinstance(summary, dict):
        raise HwsimError(f"{str(run_dir / 'summary.json')!r} is not a JSON object of summary "
                         "keys; give the folder written by: hwsim run SCENARIO.yaml --out DIR")
    return summary


def run_kinds(summary: dict[str, Any]) -> list[str]:
    """What a run did, from its summary keys: ``training`` (``step_time_s``), ``serving``
    (``ttft_p50_s``), ``transfers`` (``makespan_s``); a shared cluster's ``job.<name>.`` keys
    count too, so it can be several."""
    keys = {k.rsplit(".", 1)[-1] for k in summary}
    kinds = [kind for kind, key in (("training", "step_time_s"), ("serving", "ttft_p50_s"),
                                    ("transfers", "makespan_s")) if key in keys]
    return kinds


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(_fmt(v))}</td>' if isinstance(v, (int, float))
            and not isinstance(v, bool) else f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure_html(title: str, fig: Figure, caption: str) -> str:
    alt = html.escape(title)
    return (f'<figure class="plot"><img alt="{alt}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _plots(run_dir: Path, summary: dict[str, Any], kinds: list[str]) -> list[tuple[str, str]]:
    """(section title, html) of every plot that applies to the run."""
    from hwsim.analysis import plots

    out: list[tuple[str, str]] = []
    events = _read_frame(run_dir, "events")
    util = _read_frame(run_dir, "utilization")
    if "training" in kinds and events is not None and not events.empty:
        simulated = [v for k, v in summary.items() if k.rsplit(".", 1)[-1] == "steps_simulated"
                     and isinstance(v, int)]  # a shared cluster's job.<name>.steps_simulated
        step = 1 if simulated and min(simulated) > 1 else 0
        try:
            jobs = [k.split(".")[1] for k in summary if k.startswith("job.")
                    and k.endswith(".step_time_s")]  # a shared cluster: its first training job
            fig = plots.step_gantt(events, step=step, job=jobs[0] if jobs else None)
            shown, total = fig.hwsim_devices
            which = (f"all {total} simulated devices" if shown == total else
                     f"the first {shown} of {total} simulated devices")
            out.append(("Step Gantt", _figure_html(
                "step Gantt", fig, f"Step {step} of the streams of {which}; bars by part, gaps "
                "are idle time (pipeline bubbles, waiting for data or peers).")))
        except HwsimError as err:  # a run without step-tagged events (e.g. a shared cluster)
            out.append(("Step Gantt", f'<p class="note">No step Gantt: {html.escape(str(err))}'
                                      "</p>"))
    if util is not None and not util.empty:
        out.append(("Utilization", _figure_html(
            "utilization heatmap", plots.utilization_heatmap(util, top=24),
            "Busy fraction of the busiest resources (links, storage channels, device streams) "
            "per time bin.")))
    requests = _read_frame(run_dir, "requests")
    if requests is not None and not requests.empty:
        out.append(("Latency", _figure_html(
            "latency CDFs", plots.latency_cdf(requests),
            "Empirical CDFs over the completed requests; dotted p50, dashed p99.")))
    iterations = _read_frame(run_dir, "iterations")
    if iterations is not None and not iterations.empty:
        out.append(("Batching and KV cache", _figure_html(
            "serving timeline", plots.serving_timeline(iterations),
            "Batch size and KV-cache blocks in use per scheduler iteration.")))
    return out


def render_report(run_dir: str | Path) -> str:
    """The HTML report of result directory *run_dir*, as one self-contained string.

    Sections: title and headline, summary table, top bottlenecks (with a bar chart), memory
    (parts per device and peak per pool), the plots that apply to the run kind, failures when
    the run had them, and the scenario (``scenario.json``) it ran.

    Raises
    ------
    HwsimError
        If *run_dir* does not exist or is not a result directory (no ``summary.json``), or
        matplotlib is not installed.
    """
    from hwsim.analysis import plots

    run_dir = Path(run_dir)
    summary = _check_dir(run_dir)
    plots.require_matplotlib()
    kinds = run_kinds(summary)
    scenario_path = run_dir / "scenario.json"
    config = _read(scenario_path, lambda p: json.loads(p.read_text(encoding="utf-8"))) if \
        scenario_path.is_file() else {}
    if not isinstance(config, dict):
        config = {}
    name = str(config.get("name") or run_dir.name)
    parts = [f"<h1>hwsim report: {html.escape(name)}</h1>",
             f'<p class="note">Result directory {html.escape(str(run_dir))}; run kind: '
             f"{html.escape(', '.join(kinds) or 'unknown')}.</p>"]
    if config.get("description"):
        parts.append(f"<p>{html.escape(str(config['description']))}</p>")
    parts += [f'<p class="headline">{html.escape(line)}</p>'
              for line in headline(summary, config)]
    parts.append("<h2>Summary</h2>")
    parts.append(_table([(k, v) for k, v in summary.items()], ("key", "value")))

    parts.append("<h2>Top bottlenecks</h2>")
    bottleneck_csv = run_dir / "bottleneck.csv"
    bottleneck = _read(bottleneck_csv, pd.read_csv) if bottleneck_csv.is_file() else \
        pd.DataFrame()
    if not bottleneck.empty and {"category", "share"} <= set(bottleneck.columns):
        top = bottleneck.sort_values("share", ascending=False, kind="stable")
        cols = [c for c in ("job", "category", "seconds", "share") if c in top.columns]
        parts.append(_table([tuple(r) for r in top[cols].head(10).itertuples(index=False)],
                            tuple(cols)))
        parts.append(_figure_html("bottleneck bars", plots.bottleneck_bars(bottleneck),
                                  "Critical-path time by category, as shares."))
    else:
        parts.append('<p class="note">No bottleneck breakdown in this result.</p>')

    parts.append("<h2>Memory</h2>")
    mem_parts = plots.memory_parts(summary)
    if not mem_parts.empty:
        parts.append(_table([tuple(r) for r in mem_parts.itertuples(index=False)],
                            ("job", "part", "GB per device")))
        parts.append(_figure_html("memory breakdown", plots.memory_breakdown(summary),
                                  "Memory per device by part; dashed: device capacity."))
    memory = _read_frame(run_dir, "memory")
    if memory is not None and not memory.empty:
        parts.append(_figure_html("memory pools", plots.memory_breakdown(memory),
                                  "Peak use of every memory pool during the run."))
    if mem_parts.empty and (memory is None or memory.empty):
        parts.append('<p class="note">This run reports no memory use.</p>')

    for title, body in _plots(run_dir, summary, kinds):
        parts += [f"<h2>{html.escape(title)}</h2>", body]

    failures = _read_frame(run_dir, "failures")
    if failures is not None and not failures.empty:
        parts.append("<h2>Failures</h2>")
        parts.append(_table([tuple(r) for r in failures.head(50).itertuples(index=False)],
                            tuple(str(c) for c in failures.columns)))
        if len(failures) > 50:
            parts.append(f'<p class="note">First 50 of {len(failures):,} failures.</p>')

    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre>")
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>hwsim report: {html.escape(name)}</title><style>{_CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of *run_dir* and write it atomically to *out* (default
    ``run_dir/report.html``). Returns the path written."""
    text = render_report(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write_text(path, text)  # the mode of any new file (umask), like the result files
    return path
