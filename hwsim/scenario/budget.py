"""The size/event budget: how big a scenario's run will be, estimated from the validated
scenario alone, BEFORE the topology graph is built or any op list is made, and the refusal of a
scenario beyond the budget (:class:`~hwsim.exceptions.BudgetError`, exit status 4).

:func:`estimate` counts

- **devices**: the compute devices a job runs on (every GPU or TPU, or one CPU per server for a
  CPU-only cluster), and, for the message, the graph's nodes and links (one server is built
  alone, :func:`hwsim.topology.single_node`, and multiplied; fabric switches added);
- **events**: what the engine records (``len(result.events)``) plus the flows it runs (summary
  ``flows``), as the engine makes them:

  - training: simulated steps x (micro-batches x the stage's forward and backward ops + its
    optimizer ops + its collectives + its input reads) x simulated ranks (all of them, or one
    per pipeline stage when the job is folded: ``fold``), plus the data-parallel all-reduce's
    ring flows (``2 (n - 1) n`` per bucket of 25 MiB when not folded) and, for pipelines, the
    point-to-point sends. The op count comes from :func:`hwsim.workloads.model_ops` on the
    model with one and two layers (or MLP depth), extrapolated linearly to its depth, so a
    model of a million layers costs two tiny calls;
  - serving: iterations x devices per replica, an iteration taking the batch the load allows
    (``rate x output tokens x 20 ms`` of decoding in flight, at most ``max_batch_size`` or the
    replica's requests; ``clients`` for a closed loop); classic models: a batch per
    ``max_queue_delay_s`` of arrivals, at most ``max_batch_size``;
  - transfers: one event and one flow per stream; storage benchmarks (``dataloader``): two
    events and a flow per accelerator and step.

Calibration (the shipped scenarios, estimate / real ``len(events) + flows``, measured when the
budget was written; tests/test_budget.py checks the ratio stays within 0.2-5 on a few of them):
training 0.5-1.7 (1.0 for bert, gpt-350m, gpt3-175b folded, resnet50 with its input pipeline;
0.5 for mixtral's expert all-to-all, 0.77 for bloom-176b's checkpoint writes, 1.7 for the
small data-parallel MLPs), serving 0.7-3.5 (the batch follows the load: light load gives
smaller batches, more iterations), transfers exact. A data-parallel MLP on 64 to 1,024 GPUs:
0.73 at each size. It is meant to tell a run of seconds from one of hours, not to predict a
count.

The limits (:data:`DEFAULT_MAX_EVENTS`, :data:`DEFAULT_MAX_DEVICES`) are a scenario's
``limits:`` (``max_events``, ``max_devices``) or ``--max-events`` on ``hwsim run`` and ``hwsim
validate``, which wins over both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from hwsim.exceptions import BudgetError
from hwsim.scenario.schema import (Cluster, DataLoaderWorkload, InferenceWorkload, NodeSpec,
                                   Scenario, TrainingWorkload, TransferWorkload)

__all__ = ["Estimate", "estimate", "check_size", "check_budget", "DEFAULT_MAX_EVENTS", "DEFAULT_MAX_DEVICES"]

DEFAULT_MAX_EVENTS = 2_000_000
"""Recorded events plus flows a run may take by default: up to about a minute and 1 GB (the
engine runs 3e4 to 1e6 events/s: a data-parallel MLP on 1,024 GPUs, 0.44 M in 10 s and 0.4 GB, a
4,096-GPU one 30-40 us per event; the largest shipped scenario, gpt3-175b-1024xa100, records
0.8 M in about a second)."""
DEFAULT_MAX_DEVICES = 131_072
"""Compute devices a cluster may have by default (2^17: a 100,000-GPU cluster fits; the largest
shipped, llama3-405b-16384xh100, has 16,384 and builds in about a second)."""
_BUCKET_BYTES = 25 * 2**20  # PyTorch DDP's gradient bucket (hwsim.jobs.training)
_DECODE_S = 0.02  # nominal seconds of one decode iteration (7B-70B on A100/H100: 10-40 ms)
_FOLD_ABOVE = 16  # hwsim.scenario.build.FOLD_ABOVE (not imported: build imports this module)


@dataclass(frozen=True)
class Estimate:
    """What a scenario's run will hold: ``devices`` (compute devices), graph ``nodes`` and
    ``links``, ``events`` (recorded events plus flows), ``flows``, and ``detail``: where the
    events come from, in words."""

    devices: int
    nodes: int
    links: int
    events: int
    flows: int
    detail: str


def estimate(s: Scenario) -> Estimate:
    """The :class:`Estimate` of a validated scenario (see the module docstring); nothing is
    built or simulated."""
    devices, nodes, links = _hardware(s.cluster)
    kind = _kind(s)
    events = flows = 0
    details = []
    for i, (_, w) in enumerate(s.workloads()):
        n = devices if s.jobs is None else _job_devices(s.jobs[i], kind, s.cluster)
        e, f, d = _workload(s, w, n)
        events, flows = events + e, flows + f
        details.append(d if s.jobs is None else f"job {s.jobs[i].name}: {d}")
    return Estimate(devices=devices, nodes=nodes, links=links, events=int(events),
                    flows=int(flows), detail="; ".join(details))


def check_size(s: Scenario, max_devices: int | None = None) -> tuple[int, int, int]:
    """The cluster's (compute devices, graph nodes, links), or :class:`BudgetError` when its
    devices are beyond *max_devices* (else the scenario's ``limits:``, else the default): the
    part of the budget that needs no workload, checked before any graph is built."""
    devices, nodes, links = _hardware(s.cluster)
    cap_d = max_devices or s.limits.max_devices or DEFAULT_MAX_DEVICES
    if devices > cap_d:
        raise BudgetError(
            f"scenario {s.name!r} is refused by the size budget: its cluster has {devices:,} "
            f"compute devices ({nodes:,} graph nodes, {links:,} links), beyond the "
            f"limit of {cap_d:,} devices (building that graph alone would take minutes and GBs)."
            f" To run it anyway, raise the limit in the scenario: limits: {{max_devices: "
            f"{_round_up(devices)}}}; or simulate fewer servers.")
    return devices, nodes, links


def check_budget(s: Scenario, max_events: int | None = None,
                 max_devices: int | None = None) -> Estimate:
    """The scenario's :class:`Estimate`, or :class:`BudgetError` when it is beyond the limits:
    *max_events* / *max_devices* when given (``--max-events``), else the scenario's
    ``limits:``, else the defaults (devices first: :func:`check_size`)."""
    check_size(s, max_devices)
    est = estimate(s)
    cap_e = max_events or s.limits.max_events or DEFAULT_MAX_EVENTS
    if est.events > cap_e:
        raise BudgetError(
            f"scenario {s.name!r} is refused by the event budget: about {est.events:.3g} events "
            f"({est.detail}), beyond the limit of {cap_e:,}. To run it anyway, raise the limit: "
            f"hwsim run --max-events {_round_up(est.events)} (or hwsim validate --max-events ...), or limits: "
            f"{{max_events: {_round_up(est.events)}}} in the scenario; or simulate less (fewer "
            f"steps: time_to_train extrapolates epochs and token budgets from 20 steps; fewer "
            f"requests or streams; a folded parallel layout).")
    return est


def _round_up(x: float) -> str:
    """*x* rounded up to two significant digits, written as an integer (a limit to suggest)."""
    if x < 100:
        return str(int(math.ceil(x)))
    e = int(math.floor(math.log10(x))) - 1
    return f"{int(math.ceil(x / 10**e)) * 10**e}"


# -- hardware -----------------------------------------------------------------------------------
def _hardware(c: Cluster) -> tuple[int, int, int]:
    """(compute devices, graph nodes, links) of a cluster section."""
    if c.graph is not None:
        kinds = [n.kind for n in c.graph.nodes]
        acc = sum(k in ("gpu", "tpu") for k in kinds)
        cpus = len({n.server for n in c.graph.nodes if n.kind == "cpu"})
        return acc or cpus or kinds.count("cpu"), len(kinds), sum(ln.count for ln in
                                                                   c.graph.links)
    parts = [c] if c.sites is None else list(c.sites)
    devices = nodes = links = 0
    for p in parts:
        servers = ([(p.nodes or 1, p.node)] if p.groups is None else
                   [(g.nodes, g.node) for g in p.groups])
        nics = 0
        for count, node in servers:
            d, n, ln = _server(node)
            devices, nodes, links = devices + count * d, nodes + count * n, links + count * ln
            nics += count * max(node.nics_per_node, 1 if node.nic else 0)
        radix = (p.fabric.leaf_radix if p.fabric is not None and p.fabric.leaf_radix else 64)
        switches = 2 * math.ceil(nics / radix) + 1 if nics else 0  # leaves and spines
        nodes, links = nodes + switches + len(p.storage), links + nics + switches + sum(
            e.links or e.count for e in p.storage)
    return devices, nodes, links + len(c.wan or [])


def _server(node: NodeSpec) -> tuple[int, int, int]:
    """(compute devices, nodes, links) of one server of *node*."""
    return _server_shape(tuple(sorted(node.model_dump().items())))


@lru_cache(maxsize=64)
def _server_shape(items: tuple) -> tuple[int, int, int]:
    from hwsim.topology.builders import single_node

    spec = dict(items)
    try:
        g = single_node(**spec)
        nodes, links = g.number_of_nodes(), g.number_of_edges()
    except Exception:  # noqa: BLE001 - a bad server is reported by the real build; count it
        nodes = links = spec["gpus_per_node"] + spec["cpu_sockets"] + 1
    return spec["gpus_per_node"] or 1, nodes, links


def _kind(s: Scenario) -> str:
    nodes = s.cluster.node_specs()
    if any(n.gpu for n in nodes) or any(n.kind == "gpu" for n in (
            s.cluster.graph.nodes if s.cluster.graph else [])):
        return "gpu"
    return "tpu" if any(n.tpu for n in nodes) else "cpu"


def _job_devices(job: Any, kind: str, c: Cluster) -> int:
    if isinstance(job.workload, TransferWorkload):
        return 0
    return job.devices if job.devices is not None else len(job.nodes or [])


# -- workloads ----------------------------------------------------------------------------------
def _workload(s: Scenario, w: Any, n: int) -> tuple[float, float, str]:
    """(events incl. flows, flows, detail) of workload *w* on *n* devices."""
    if isinstance(w, TrainingWorkload):
        return _training(s, w, n)
    if isinstance(w, InferenceWorkload):
        return _serving(s, w, n)
    if isinstance(w, TransferWorkload):
        streams = sum(t.streams for t in w.transfers)
        return 2 * streams, streams, f"{streams:,} transfer streams"
    assert isinstance(w, DataLoaderWorkload)
    per = w.steps * w.accelerators
    return 3 * per, per, f"{w.steps:,} steps x {w.accelerators:,} accelerators"


def _training(s: Scenario, w: TrainingWorkload, n: int) -> tuple[float, float, str]:
    from hwsim.scenario.build import SIMULATED_STEPS

    par = w.parallelism
    n = max(n, 1)
    dp = par.dp or max(1, n // (par.tp * par.pp * par.cp))
    micro = par.micro_batch or max(1, w.global_batch // dp)
    mb = max(1, w.global_batch // (dp * micro))
    if w.steps is not None:
        steps = w.steps
    else:
        workers = w.data.workers if w.data is not None and w.data.prefetch > 0 else 1
        steps = -(-(SIMULATED_STEPS - 1) // workers) * workers + 1
    ops = _op_counts(w, micro)
    if ops is None:  # the model cannot be built: the real build says why
        return 0.0, 0.0, "model not built"
    fb, opt, grad_bytes, comm = ops
    parallel = (par.tp > 1 or par.pp > 1 or par.cp > 1 or par.ep > 1 or par.zero
                or par.virtual_stages > 1 or par.offload != "none")
    mixed = (bool(s.cluster.stragglers) or len({x.model_dump_json() for x in
                                                 s.cluster.node_specs()}) > 1)
    fold = parallel and (w.fold is True or (w.fold == "auto" and n > _FOLD_ABOVE
                                            and w.data is None and not mixed))
    ranks = par.pp if fold else n
    per_rank = (mb * fb + opt) / par.pp
    flows = 0.0
    reads = 0.0
    if w.data is not None:  # a loader read and a copy per micro-batch
        reads = 2 * mb
        flows += steps * ranks * 2 * mb
    buckets = max(1, math.ceil(grad_bytes / _BUCKET_BYTES)) if n > 1 else 0
    if not parallel:
        flows += steps * buckets * n  # the all-reduce's flows: one per rank and phase
    else:  # sends between stages; the ops' collectives (expert all-to-all: pairs)
        width = par.ep if fold else max(par.tp, par.ep)  # folded TP groups: closed form
        flows += steps * ranks * mb * (2 * (par.pp > 1) + comm / par.pp * (width > 1) * width)
    recorded = steps * ranks * (per_rank + reads + buckets)
    detail = (f"{steps:,} steps x {mb:,} micro-batches x {fb / par.pp:,.0f} ops x {ranks:,} "
              f"simulated ranks{' (folded)' if fold else ''}, and {flows:.3g} flows")
    return recorded + flows, flows, detail


def _op_counts(w: TrainingWorkload, micro: int
               ) -> tuple[float, float, float, float] | None:
    """(forward + backward ops, optimizer ops, gradient bytes, communicating ops) of one rank's
    micro-batch, from
    the model with one and two layers extrapolated to its depth (exact for a dense stack)."""
    from hwsim.workloads import MLPSpec, TransformerSpec, model_ops, resolve_model

    par = w.parallelism
    fields = w.model.model_dump(exclude_none=True)
    flash = fields.pop("flash_attention", None)
    try:
        spec = resolve_model(fields)
    except (ValueError, OSError):
        return None
    if flash is None:  # the stack's choice (on some device: the count is an estimate)
        from hwsim.catalog.stacks import load_stacks
        stacks = load_stacks()
        stack = (stacks.get(w.stack) if w.stack else
                 stacks.default_for(isinstance(spec, TransformerSpec)))
        flash = bool(stack.attention)
    depth_field = ("layers" if isinstance(spec, TransformerSpec) else
                   "depth" if isinstance(spec, MLPSpec) else None)
    depth = getattr(spec, depth_field) if depth_field else 1

    def count(d: int | None) -> tuple[float, float, float, float]:
        sp = replace(spec, **{depth_field: d}) if d is not None else spec
        ops = model_ops(sp, micro_batch=micro, precision=w.precision, seq_len=w.seq_len,
                        tp=par.tp, sp=par.sequence_parallel, cp=par.cp, ep=par.ep,
                        recompute=par.recompute, optimizer=w.optimizer, flash_attention=flash)
        return (len(ops.forward) + len(ops.backward), len(ops.optimizer),
                sum(op.grad_bytes for op in ops.backward),
                sum(1 for op in ops.forward + ops.backward if op.comm))
    try:
        if depth_field is None or depth <= 8:
            return count(None)
        one, two = count(1), count(2)
    except (ValueError, TypeError):
        return None
    return tuple(a + (b - a) * (depth - 1) for a, b in zip(one, two))  # type: ignore[return-value]


def _serving(s: Scenario, w: InferenceWorkload, n: int) -> tuple[float, float, str]:
    a, par, sc = w.arrivals, w.parallelism, w.scheduler
    if a.process == "trace":
        requests = _trace_rows(a.trace)
    else:
        requests = a.requests or 0
    out = a.output_tokens if isinstance(a.output_tokens, int) else _mean_tokens(a.output_tokens)
    replicas = max(1, par.replicas)
    per_replica = max(1.0, requests / replicas)
    if sc.policy == "dynamic":
        arriving = (a.rate_per_s or 0.0) / replicas * sc.max_queue_delay_s
        batch = max(1.0, min(sc.max_batch_size or 256, per_replica, arriving))
        batches = requests / batch
        return batches, 0.0, f"{requests:,} requests in batches of about {batch:.0f}"
    if a.process == "closed":
        flight = float(a.clients or 1) / replicas
    elif a.rate_per_s is not None:
        flight = a.rate_per_s / replicas * out * _DECODE_S
    else:
        flight = float(sc.max_batch_size or 256)
    batch = max(1.0, min(sc.max_batch_size or 256, per_replica, flight))
    iterations = requests * out / batch
    per_iteration = par.tp * par.pp
    flows = iterations * (par.pp - 1) + (requests if par.prefill_replicas else 0)
    return (iterations * per_iteration + flows, flows,
            f"{requests:,} requests x {out:.0f} output tokens / batch {batch:.0f} x "
            f"{per_iteration} devices per replica")


def _mean_tokens(t: Any) -> float:
    if t.dist == "uniform":
        return (t.low + t.high) / 2
    if t.dist == "normal":
        return max(1.0, t.mean)
    if t.dist == "lognormal":
        return t.median * math.exp(t.sigma ** 2 / 2)
    return sum(t.values) / len(t.values)


def _trace_rows(path: str | None) -> int:
    """Rows of a request trace (its lines, less the header), 0 when unreadable (the real build
    reports it)."""
    try:
        with Path(str(path)).open("rb") as f:
            return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                       - 1)
    except OSError:
        return 0
