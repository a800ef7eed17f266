"""The answer of a run in a few lines, from its summary: what ``hwsim run`` prints first and the
report's headline.

Training: the time (``time to train`` only when the scenario gives a budget: epochs,
``train_samples`` or ``train_tokens``; else the step time of the steps simulated), with a page
cache the first epoch's and the later epochs' steps and step times; the throughput; rank 0's step
by part; the bottleneck, with the phase it describes and the parts of the step it bounds; whether
it fits. Serving: latencies and throughput, the bottleneck and, when queueing is most of the time
to first token, that. Transfers: the makespan, and every transfer that failed. A storage check
(``kind: dataloader``): the accelerators' utilization. A job that does
not fit: that, once, and nothing of a run that did not happen. A shared cluster: a line per job.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from hwsim.analysis.parallelism import PARTS, category_parts, summary_key
from hwsim.units import format_quantity

__all__ = ["headline", "has_budget", "duration", "breakdown_line"]

_BUDGET_KEYS = ("epochs", "train_samples", "train_tokens")


def duration(seconds: float) -> str:
    """``27.1 s``, ``12.5 min``, ``3.63 h``, ``41.2 d``; below a second with an SI prefix."""
    if seconds < 1:
        return format_quantity(seconds, "s")
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _t(seconds: float) -> str:
    return duration(seconds)


def has_budget(workload: Mapping[str, Any] | None, summary: Mapping[str, Any]) -> bool:
    """Whether a training job has a budget to extrapolate to (``time to train`` means
    something): its workload (a scenario's ``workload`` or ``jobs[i].workload`` as a dict) gives
    epochs, train_samples or train_tokens; without the workload, whether the summary's
    ``total_steps`` exceed the steps simulated."""
    if workload:
        return any(workload.get(k) is not None for k in _BUDGET_KEYS)
    total, sim = summary.get("total_steps"), summary.get("steps_simulated")
    return isinstance(total, int) and isinstance(sim, int) and total > sim


def _ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cached(s: Mapping[str, Any]) -> bool:
    """Whether the run has a first epoch from storage and later ones from the page cache."""
    return (_ok(s.get("later_epochs_step_time_s")) and bool(s.get("later_epochs_steps"))
            and _ok(s.get("first_epoch_time_s")) and bool(s.get("first_epoch_steps")))


def _phase(s: Mapping[str, Any]) -> str | None:
    """Which steps the step breakdown and the bottleneck describe, when a page cache makes two
    phases: the first epoch (the later ones extrapolated), or all the simulated steps after the
    first (both phases)."""
    if not _cached(s):
        return None
    if "cached_step_time_s" in s:
        return "first epoch, read from storage"
    return f"steps 2-{s.get('steps_simulated')}: first epoch from storage and later from cache"


def breakdown_line(s: Mapping[str, Any]) -> str | None:
    """Rank 0's step by part (docs/model.md "Step breakdown by parallelism"), non-zero parts
    only: ``per step (rank 0): compute 797 ms (74.1%), comm tp 75.2 ms (7.0%), bubble 196 ms
    (18.2%)`` (``rank 0, first epoch`` with a page cache)."""
    step = s.get("step_time_s")
    if not _ok(step) or not step:
        return None
    items = []
    for part in PARTS:
        t = s.get(summary_key(part))
        if t:  # None or 0: absent
            label = part.replace("exposed_comm_", "comm ").replace("_", " ")
            items.append(f"{label} {format_quantity(t, 's')} ({t / step:.1%})")
    where = f"rank 0, {_phase(s)}" if _phase(s) else "rank 0"
    return f"per step ({where}): {', '.join(items)}" if items else None


_BOUND = {"compute": "compute-bound ops", "memory": "ops bound by memory bandwidth",
          "overhead": "ops that take their launch/dispatch overhead, not their math"}


def _bottleneck_head(s: Mapping[str, Any], of: str = "critical path", phase: str = ""
                     ) -> str | None:
    """``bottleneck (phase): name (share of *of*): label``, or None without a bottleneck."""
    name, share, label = s.get("bottleneck"), s.get("bottleneck_share"), s.get("bottleneck_label")
    if not name or name == "none":
        return None
    line = f"bottleneck{f' ({phase})' if phase else ''}: {name}"
    if _ok(share):
        line += f" ({share:.0%} of {of})"
    return line + (f": {label}" if label and label != name else "")


def _bottleneck_training(s: Mapping[str, Any]) -> str | None:
    line = _bottleneck_head(s, phase=_phase(s))
    if line is None:
        return None
    name = s["bottleneck"]
    step = s.get("step_time_s") or 0.0
    parts = [p for p in category_parts(str(name))  # the parts that hold 5 % of the step or more
             if _ok(s.get(summary_key(p))) and step and s[summary_key(p)] >= 0.05 * step]
    if parts:
        # relate the category to the step breakdown printed above it
        names = [p.replace("exposed_comm_", "comm ").replace("_", " ") for p in parts]
        what = " and ".join(names) if len(names) < 3 else ", ".join(names)
        what += " part" if len(names) == 1 else " parts"
        bound = _BOUND.get(str(name))
        line += f"; its time lies in the {what} above" + (f": {bound}" if bound else "")
    if _cached(s) and "cached_step_time_s" in s:  # the later epochs were not simulated
        line += (f"; later epochs read from the page cache, "
                 f"{format_quantity(s['later_epochs_step_time_s'], 's')} per step")
    return line


def _training(s: Mapping[str, Any], budget: bool) -> list[str]:
    step = s.get("step_time_s")
    if not _ok(step):
        return []
    lines = []
    if budget and _ok(s.get("time_to_train_s")):
        total = s["total_steps"]
        if _cached(s):
            first, later = s["first_epoch_steps"], s["later_epochs_steps"]
            line = (f"time to train: {_t(s['time_to_train_s'])} for {total:,} steps: the first "
                    f"epoch {first:,} steps of "
                    f"{format_quantity(s['first_epoch_time_s'] / first, 's')} "
                    f"({_t(s['first_epoch_time_s'])}, from storage), the later epochs {later:,} "
                    f"steps of {format_quantity(s['later_epochs_step_time_s'], 's')} "
                    f"({_t(later * s['later_epochs_step_time_s'])}, from the page cache)")
        else:
            line = (f"time to train: {_t(s['time_to_train_s'])} ({total:,} steps of "
                    f"{format_quantity(step, 's')})")
        if s.get("goodput") is not None:  # a whole run with failures and checkpoints
            ideal = _t(s["time_to_train_ideal_s"])
            line += (f"; {s['failures_total']:,} failures, {s['checkpoints']:,} checkpoints, "
                     f"goodput {s['goodput']:.1%} ({ideal} without them)")
        lines.append(line)
    else:
        n = s.get("steps_simulated")
        lines.append(f"step time: {format_quantity(step, 's')} ({n:,} steps simulated; no "
                     "epochs, train_samples or train_tokens, so no time to train)"
                     if isinstance(n, int) else f"step time: {format_quantity(step, 's')}")
    if _cached(s) and _ok(s.get("global_batch")):  # the two phases' rates
        batch = s["global_batch"]
        lines.append(f"throughput: {batch * s['first_epoch_steps'] / s['first_epoch_time_s']:,.0f}"
                     f" samples/s in the first epoch, {batch / s['later_epochs_step_time_s']:,.0f}"
                     " samples/s in the later ones")
    else:
        thr = [f"{s['samples_per_s']:,.0f} samples/s"] if _ok(s.get("samples_per_s")) else []
        if _ok(s.get("tokens_per_s")):
            thr.append(f"{s['tokens_per_s']:,.0f} tokens/s")
        if _ok(s.get("mfu")):
            thr.append(f"MFU {s['mfu']:.1%}")
        if thr:
            lines.append(f"throughput: {', '.join(thr)}")
    lines += [x for x in (breakdown_line(s), _bottleneck_training(s)) if x]
    return lines


def _dataloader(s: Mapping[str, Any]) -> list[str]:
    """A storage check (``kind: dataloader``): how busy the emulated accelerators are kept."""
    line = (f"accelerator utilization: {s['accelerator_utilization']:.1%} of "
            f"{s.get('accelerators')} emulated accelerators (steady-state step "
            f"{format_quantity(s['step_time_s'], 's')}")
    if _ok(s.get("read_bytes_per_s")):
        line += f", reading {format_quantity(s['read_bytes_per_s'], 'B/s')}"
    head = _bottleneck_head(s)
    return [line + ")"] + ([head] if head else [])


def _serving(s: Mapping[str, Any]) -> list[str]:
    tpot = s.get("tpot_p50_s") is not None
    q = (f"{s['requests_completed']:,} requests served: " + ("TTFT" if tpot else "latency")
         + f" p50 {format_quantity(s['ttft_p50_s'], 's')} / p99 "
         f"{format_quantity(s['ttft_p99_s'], 's')}")
    if tpot:
        q += (f", TPOT p50 {format_quantity(s['tpot_p50_s'], 's')} / p99 "
              f"{format_quantity(s['tpot_p99_s'], 's')}")
    q += (f", {s['output_tokens_per_s']:,.0f} output tokens/s" if tpot
          else f", {s['requests_per_s']:,.0f} responses/s")
    if s.get("slo_attainment") is not None:
        q += f", SLO met by {s['slo_attainment']:.1%}"
    lines = [q]
    tail = s.get("bottleneck_of") == "ttft_p99"  # queueing named from the TTFT tail
    line = _bottleneck_head(s, of="the p99 time to first token" if tail
                            else "the requests' time")
    if line is not None:
        if tail:
            line += ("; the replicas do not keep up with the arrivals" if s.get("saturated")
                     else "; TTFT p99 misses the SLO")
        waited = s.get("ttft_share_queueing")
        if _ok(waited) and s.get("ttft_bottleneck") in ("queueing", "kv_capacity"):
            why = ("waiting for KV-cache blocks" if s["ttft_bottleneck"] == "kv_capacity"
                   else "waiting for a free batch slot: the replicas are saturated")
            p99 = (f"; p99 queue {format_quantity(s['queue_p99_s'], 's')} of TTFT "
                   f"{format_quantity(s['ttft_p99_s'], 's')}"
                   if _ok(s.get("queue_p99_s")) and _ok(s.get("ttft_p99_s")) else "")
            line += f"; the time to first token is {waited:.0%} queueing ({why}{p99})"
        elif tail and _ok(s.get("queue_p99_s")) and _ok(s.get("ttft_p99_s")):
            line += (f" (p99 queue {format_quantity(s['queue_p99_s'], 's')} of TTFT "
                     f"{format_quantity(s['ttft_p99_s'], 's')})")
        lines.append(line)
    if _ok(s.get("prefix_hit_rate")):  # scheduler.prefix_caching
        lines.append(f"prefix cache: {s['prefix_hit_rate']:.1%} of prompt tokens hit, "
                     f"{s['prefill_tokens_saved']:,} prefill tokens saved, "
                     f"{s['prefix_blocks_evicted']:,} blocks evicted")
    return lines


def _transfers(s: Mapping[str, Any]) -> list[str]:
    failed = {k[len("transfer_"):-len("_error")]: v for k, v in s.items()
              if k.startswith("transfer_") and k.endswith("_error")}
    n = s.get("transfers")
    lines = []
    if failed:
        lines.append(f"{len(failed)} of {n} transfers failed: " + "; ".join(
            f"{name}: {why}" for name, why in failed.items()))
    if not failed or len(failed) < (n or 0):
        what = "the others" if failed else "all transfers"
        lines.append(f"{what} done in {_t(s['makespan_s'])} "
                     f"({format_quantity(s['bytes_moved'], 'B')} moved)")
        head = _bottleneck_head(s)
        lines += [head] if head else []
    return lines


def _memory(s: Mapping[str, Any]) -> str | None:
    used, cap = s.get("memory_per_device_gb"), s.get("memory_capacity_per_device_gb")
    if not (_ok(used) and _ok(cap)):
        return None
    return (f"fits: {format_quantity(used * 1e9, 'B')} of {format_quantity(cap * 1e9, 'B')} "
            "per device")


def _one(s: Mapping[str, Any], workload: Mapping[str, Any] | None) -> list[str]:
    if s.get("fits") is False and s.get("makespan_s") is None:  # never ran
        return [str(s.get("bottleneck_label") or "does not fit")]
    if s.get("ttft_p50_s") is not None:
        lines = _serving(s)
    elif s.get("makespan_s") is not None:
        lines = _transfers(s)
    elif _ok(s.get("accelerator_utilization")) and _ok(s.get("step_time_s")):
        lines = _dataloader(s)
    elif s.get("step_time_s") is not None:
        lines = _training(s, has_budget(workload, s))
    else:
        lines = []
    if lines and s.get("fits") is not False:
        memory = _memory(s)
        if memory:
            lines.append(memory)
        power = _power(s)
        if power:
            lines.append(power)
    return lines


def _power(s: Mapping[str, Any]) -> str | None:
    """The power line, for a scenario with a ``power:`` section (a PUE other than 1 or a GPU
    cap): facility and IT power, the cap's clock, energy per token (or sample, or output
    token) and to train."""
    if not _ok(s.get("power_avg_kw")) or (s.get("pue", 1.0) == 1.0
                                           and s.get("gpu_power_cap_w") is None):
        return None
    parts = [f"power: {s['power_avg_kw']:,.3g} kW facility ({s['power_it_kw']:,.3g} kW IT, "
             f"PUE {s['pue']:g})"]
    if s.get("gpu_power_cap_w") is not None and _ok(s.get("gpu_clock_factor")):
        parts.append(f"GPUs capped at {s['gpu_power_cap_w']:g} W (compute clock "
                     f"{s['gpu_clock_factor']:.0%})")
    for key, unit in (("energy_per_token_j", "token"), ("energy_per_output_token_j",
                                                        "output token")):
        if _ok(s.get(key)):
            parts.append(f"{s[key]:.3g} J per {unit}")
            break
    else:
        if _ok(s.get("energy_per_sample_j")):
            parts.append(f"{s['energy_per_sample_j']:.3g} J per sample")
    if _ok(s.get("energy_to_train_mwh")):
        parts.append(f"{s['energy_to_train_mwh']:,.3g} MWh to train")
    return ", ".join(parts)


def headline(summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> list[str]:
    """The lines that answer the run's question (see the module doc), from its *summary* and
    the scenario it ran (*config*, ``Result.config``; optional: without it "time to train" is
    printed when the budget runs past the steps simulated). A shared cluster gives a line per
    job, ``job <name>: ...``."""
    config = config or {}
    jobs: dict[str, dict[str, Any]] = {}
    for key, value in summary.items():
        if key.startswith("job.") and key.count(".") >= 2:
            _, name, sub = key.split(".", 2)
            jobs.setdefault(name, {})[sub] = value
    if not jobs:
        return _one(summary, config.get("workload") if isinstance(config.get("workload"), dict)
                    else None)
    lines: list[str] = []
    workloads = {str(j.get("name")): j.get("workload") for j in config.get("jobs") or []
                 if isinstance(j, dict)}
    for name, s in jobs.items():
        mine = _one(s, workloads.get(name))
        if mine:  # the job's first line after its name, the others indented under it
            lines += [f"job {name}: {mine[0]}", *(f"  {line}" for line in mine[1:])]
    return lines
