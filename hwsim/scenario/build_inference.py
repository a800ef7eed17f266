"""The plan of an inference workload (:class:`~hwsim.jobs.serving.ServingPlan`): the model, the
replicas' devices, and the requests, drawn from the scenario's seed or read from its trace."""

from __future__ import annotations

import networkx as nx
import numpy as np

from hwsim.catalog import get_device, load_catalog
from hwsim.catalog.engines import SCHEDULER_FIELDS, get_engine, load_engines
from hwsim.exceptions import ScenarioError
from hwsim.jobs.batching import BatchingPlan
from hwsim.jobs.serving import ServingPlan
from hwsim.scenario.schema import InferenceWorkload, Scenario
from hwsim.topology import compute_devices, nodes_of_kind, server_index, server_peer
from hwsim.workloads import TransformerSpec, model_ops, resolve_model
from hwsim.workloads.memory import storage_bytes
from hwsim.workloads.moe import moe_layout
from hwsim.workloads.quant import DEFAULT_GROUP
from hwsim.workloads.arrivals import (Request, from_trace, open_loop, shared_prefixes,
                                      token_sampler)
from hwsim.workloads.speculative import SpeculativeConfig, check_proposer

__all__ = ["serving_plan"]

_TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
_PREFIX_COLUMNS = ("prefix_id", "prefix_tokens")


def serving_plan(s: Scenario, g: nx.Graph, devices: list[str] | None = None,
                 job: str = "serve") -> ServingPlan | BatchingPlan:
    """The plan of an inference workload on *devices* (default: the cluster's, in natural
    order; the replicas take the first ones), its events tagged *job*."""
    w = s.workload
    assert isinstance(w, InferenceWorkload)
    spec = _model(w.model, "workload.model")
    llm = isinstance(spec, TransformerSpec) and not spec.encoder
    if not llm or w.scheduler.policy == "dynamic":
        return _batching_plan(s, g, spec, llm, devices, job)
    par = w.parallelism
    dp = _expert_parallel(w, spec)
    kind = s.compute_device
    whose = "cluster" if devices is None else "job"
    devices = list(devices) if devices is not None else nodes_of_kind(g, kind)
    per = par.tp * par.pp * dp
    need = per * par.replicas
    if len(devices) < need:
        what = (f"tp x pp = {par.tp} x {par.pp}" if dp == 1 else
                f"tp x ep x pp = {par.tp} x {par.ep} x {par.pp} (attention_dp)")
        valid = (f"replicas <= {len(devices) // per}" if len(devices) >= per else
                 f"{what.split(' = ')[0]} <= {len(devices)}")
        raise ScenarioError(f"{par.replicas} replicas of {what} need {need} "
                            f"{kind} devices; the {whose} has {len(devices)}; valid: {valid}",
                            field="workload.parallelism")
    if spec.heads % par.tp:
        raise ScenarioError(f"tp={par.tp} must divide the model's {spec.heads} attention heads",
                            field="workload.parallelism.tp")
    replicas = tuple(tuple(devices[i * per:(i + 1) * per]) for i in range(par.replicas))
    check_precision(g, [d for r in replicas for d in r], w.precision)
    a = w.arrivals
    rng = np.random.default_rng(s.seed)
    try:
        think: tuple[float, ...] = ()
        if a.process == "trace":
            requests = from_trace(*_read_trace(a.trace))
        elif a.process == "closed":
            tokens = [token_sampler(t if isinstance(t, int) else t.as_spec(), rng)(a.requests)
                      for t in (a.prompt_tokens, a.output_tokens)]
            requests = [Request(i, 0.0, int(p), int(o)) for i, (p, o) in enumerate(zip(*tokens))]
            think = tuple(float(x) for x in (rng.exponential(a.think_s, a.requests)
                                             if a.think_s > 0 else np.zeros(a.requests)))
        else:
            tokens = [t if isinstance(t, int) else t.as_spec()
                      for t in (a.prompt_tokens, a.output_tokens)]
            requests = open_loop(a.process, rate_per_s=a.rate_per_s, requests=a.requests,
                                 prompt=tokens[0], output=tokens[1], rng=rng, cv=a.cv,
                                 start_s=a.start)
    except ValueError as err:
        raise ScenarioError(str(err), field="workload.arrivals") from None
    if a.prefix is not None:  # drawn after everything else: the rest of a seed's draws stay
        try:
            requests = shared_prefixes(requests, a.prefix.as_spec(), rng)
        except ValueError as err:
            raise ScenarioError(str(err), field="workload.arrivals.prefix") from None
    sc = _scheduler(w, g, replicas[0][0], dp)
    fmt = w.weight_precision or "fp4"
    if w.precision == "fp4" and fmt not in sc["engine"].fp4_weights:
        able = [n for n, e in load_engines().profiles.items() if fmt in e.fp4_weights]
        raise ScenarioError(f"precision 'fp4' with {fmt} weights: engine {sc['engine'].name!r} "
                            f"has no documented FP4 path for them (engines.yaml fp4_weights: "
                            f"{', '.join(sc['engine'].fp4_weights) or 'none'}); valid: engine "
                            f"{' or '.join(able) or '(none)'}, or precision fp8",
                            field="workload.engine")
    slo = w.slo
    hosts: tuple[tuple[str, str], ...] = ()
    if w.scheduler.preemption == "swap":
        index = server_index(g)
        pairs = [(d, server_peer(g, d, "memory", index)) for r in replicas for d in r]
        if any(h is None for _, h in pairs):
            raise ScenarioError("preemption: swap needs host memory on every server (a node "
                                "with host_memory); valid: preemption: recompute",
                                field="workload.scheduler.preemption")
        hosts = tuple(pairs)
    speculative = _speculative(w, spec, par.tp)
    try:
        return ServingPlan(job=job, spec=spec, replicas=replicas, tp=par.tp, pp=par.pp,
                           precision=w.precision, requests=tuple(requests), policy=w.scheduler.policy,
                           max_batch_size=sc["max_batch_size"] * sc["dp_scale"],
                           max_batched_tokens=sc["max_batched_tokens"] * sc["dp_scale"],
                           chunked_prefill=sc["chunked_prefill"], no_evict=sc["no_evict"],
                           block_tokens=sc["block_tokens"],
                           memory_fraction=sc["memory_fraction"], router=w.router,
                           slo_ttft_s=slo.ttft_s if slo else None,
                           slo_tpot_s=slo.tpot_s if slo else None,
                           clients=a.clients if a.process == "closed" else 0, think_s=think,
                           preemption=w.scheduler.preemption, hosts=hosts,
                           prefill_replicas=par.prefill_replicas, engine=sc["engine"],
                           kv_precision=w.kv_precision, weight_precision=w.weight_precision,
                           weight_group=w.weight_group_size or DEFAULT_GROUP,
                           prefill_with_decodes=sc["engine"].prefill_with_decodes,
                           speculative=speculative, ep=par.ep, attention_dp=par.attention_dp,
                           expert_skew=w.expert_skew,
                           prefix_caching=w.scheduler.prefix_caching,
                           fast_forward=w.scheduler.fast_forward,
                           record_iterations=s.outputs.record == "full")
    except ValueError as err:
        field = ("workload.parallelism.prefill_replicas" if "prefill_replicas" in str(err)
                 or "disaggregation" in str(err) else "workload.scheduler")
        raise ScenarioError(str(err), field=field) from None


_DP_LIMITS_PER_GROUP = {
    # vLLM: each DP rank is its own engine core with its own scheduler ("--max-num-seqs applies
    # per DP rank", docs/serving/data_parallel_deployment.md)
    "vllm": True,
    # SGLang: with --enable-dp-attention, server_args.py divides chunked_prefill_size by
    # dp_size ("adjusted ... to avoid MoE kernel issues") and the scheduler takes
    # per_dp_max_running_requests = max_running_requests // dp_size: the values are the replica's
    "sglang": False,
    # TensorRT-LLM (enable_attention_dp): assumed per rank, as vLLM; no document retrieved
    "trtllm": True,
}
"""Whether an engine's ``max_batch_size`` / ``max_batched_tokens`` apply to each attention
data-parallel group (True: the replica's scheduler admits ``ep`` times them) or to the whole
replica (False)."""


def check_precision(g: nx.Graph, devices: list[str], precision: str) -> None:
    """ScenarioError (field ``workload.precision``) when a device of *devices* has no matrix
    units at a 4- or 6-bit *precision* (its catalog entry lists no such peak): hwsim does not
    emulate fp4 through a wider precision (:meth:`hwsim.catalog.specs.DeviceSpec.peak`)."""
    if precision not in ("fp4", "fp6"):
        return
    for d in dict.fromkeys(g.nodes[x]["spec"] for x in devices):
        dev = get_device(d)
        if precision not in dev.peak_flops_per_s:
            able = [k for k, v in load_catalog().devices.items() if precision in v.peak_flops_per_s]
            raise ScenarioError(f"precision {precision!r} needs {precision} matrix units and "
                                f"{dev.id} has none (its catalog entry lists no {precision} peak); "
                                f"valid: a device with them ({', '.join(able)}), or precision "
                                f"fp8 or bf16 on {dev.id} (with weight_precision fp4 or mxfp4 the "
                                f"4-bit weights are then widened inside the GEMMs)",
                                field="workload.precision")


def _expert_parallel(w: InferenceWorkload, spec: TransformerSpec) -> int:
    """Check the workload's expert parallelism against the model and the other serving
    features; the attention data-parallel groups of a stage (1 without ``attention_dp``)."""
    par = w.parallelism
    try:
        lay = moe_layout(spec, par.tp, par.ep, par.attention_dp)
    except ValueError as err:
        field = ("workload.parallelism.attention_dp" if "attention_dp replicates" in str(err)
                 else "workload.parallelism.ep")
        raise ScenarioError(str(err), field=field) from None
    if par.attention_dp:
        for on, what, field in ((par.prefill_replicas, "prefill_replicas",
                                 "workload.parallelism.prefill_replicas"),
                                (w.scheduler.preemption == "swap", "preemption: swap",
                                 "workload.scheduler.preemption"),
                                (w.speculative is not None, "speculative decoding",
                                 "workload.speculative")):
            if on:
                raise ScenarioError(f"{what} with attention_dp is not modelled (a sequence's KV "
                                    f"cache lives in one attention group); valid: attention_dp: "
                                    f"false, or no {what}", field=field)
    if par.ep > 1 and w.speculative is not None and w.speculative.method == "mtp":
        raise ScenarioError("speculative method mtp with ep > 1 is not modelled (the MTP "
                            "module's experts would need their own expert-parallel layout); "
                            "valid: method draft or ngram, or ep: 1",
                            field="workload.speculative")
    return lay.dp


def _model(ref, field: str):
    """The model a ``ModelRef`` names (serving ignores ``flash_attention``: the engine picks
    the attention kernel); a bad reference is a ScenarioError at *field*."""
    fields = ref.model_dump(exclude_none=True)
    fields.pop("flash_attention", None)
    try:
        return resolve_model(fields)
    except ValueError as err:
        raise ScenarioError(str(err), field=field) from None


def _scheduler(w: InferenceWorkload, g: nx.Graph, device: str, dp: int = 1) -> dict:
    """The scheduler a replica runs: the serving engine's defaults on *device* (its catalog
    entry's memory and id) at the workload's tp (times the *dp* attention groups: SGLang's
    ``--tp`` counts every GPU of a DP-attention replica), overridden by every field the
    scenario sets; ``engine``: the :class:`~hwsim.catalog.engines.EngineProfile`."""
    engine = get_engine(w.engine)
    spec = get_device(g.nodes[device]["spec"])
    out = engine.defaults(spec.id, spec.memory_bytes, w.parallelism.tp * dp)
    out.update(w.scheduler.model_dump(include=set(SCHEDULER_FIELDS), exclude_none=True))
    out["engine"] = engine
    out["dp_scale"] = dp if _DP_LIMITS_PER_GROUP.get(engine.name, True) else 1
    return out


def _speculative(w: InferenceWorkload, target: TransformerSpec,
                 tp: int) -> SpeculativeConfig | None:
    """The plan's speculative decoding, its draft model resolved and checked against the
    target (same vocabulary, smaller, shardable by the replica's ``tp``)."""
    sp = w.speculative
    if sp is None:
        return None
    draft = (None if sp.draft_model is None else
             _model(sp.draft_model, "workload.speculative.draft_model"))
    try:
        cfg = SpeculativeConfig(sp.method, sp.tokens, sp.acceptance, draft)
        check_proposer(cfg, target, tp=tp, precision=w.precision)
    except ValueError as err:
        raise ScenarioError(str(err), field="workload.speculative.draft_model"
                            if draft is not None else "workload.speculative") from None
    return cfg


def _read_trace(path: str) -> tuple[np.ndarray, ...]:
    """The trace's columns: arrival_s, prompt_tokens, output_tokens, and prefix_id,
    prefix_tokens when it has both."""
    import pandas as pd  # only for a trace: validating a scenario does not load pandas

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ScenarioError(f"cannot read request trace {path!r}: {err}",
                            field="workload.arrivals.trace") from None
    missing = [c for c in _TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise ScenarioError(f"request trace {path!r} lacks column(s) {', '.join(missing)}; it "
                            f"needs {', '.join(_TRACE_COLUMNS)}", field="workload.arrivals.trace")
    has = [c for c in _PREFIX_COLUMNS if c in df.columns]
    if len(has) == 1:
        lacks = next(c for c in _PREFIX_COLUMNS if c not in has)
        raise ScenarioError(f"request trace {path!r} has column {has[0]} but not {lacks}; "
                            f"shared prefixes need both (prefix_id, prefix_tokens)",
                            field="workload.arrivals.trace")
    return tuple(df[c].to_numpy() for c in _TRACE_COLUMNS + (_PREFIX_COLUMNS if has else ()))


def _batching_plan(s: Scenario, g: nx.Graph, spec, llm: bool, devices: list[str] | None,
                   job: str) -> BatchingPlan:
    """Classic serving (ResNet, BERT, DLRM, ...): one device per replica, dynamic batching."""
    w = s.workload
    if w.speculative is not None:
        raise ScenarioError(f"speculative decoding serves decoder LLMs; {spec.name!r} is not "
                            "one (or policy is dynamic); valid: no speculative",
                            field="workload.speculative")
    if llm:
        raise ScenarioError(f"policy 'dynamic' serves classic models; {spec.name!r} is a decoder "
                            "LLM; valid: policy continuous or static",
                            field="workload.scheduler.policy")
    if w.scheduler.policy != "dynamic":
        raise ScenarioError(f"model {spec.name!r} is not a decoder LLM: it is served with "
                            f"dynamic batching; valid: scheduler: {{policy: dynamic, "
                            f"max_batch_size: 32, max_queue_delay_s: 0.005}}",
                            field="workload.scheduler.policy")
    par = w.parallelism
    if par.tp != 1 or par.pp != 1 or par.prefill_replicas or par.ep != 1 or par.attention_dp:
        raise ScenarioError("classic models are served one device per replica; valid: tp: 1, "
                            "pp: 1, ep: 1, no prefill_replicas or attention_dp",
                            field="workload.parallelism")
    kind = s.compute_device
    whose = "cluster" if devices is None else "job"
    devices = list(devices) if devices is not None else compute_devices(g, kind)
    if len(devices) < par.replicas:
        raise ScenarioError(f"{par.replicas} replicas need {par.replicas} {kind} devices; the "
                            f"{whose} has {len(devices)}", field="workload.parallelism.replicas")
    a = w.arrivals
    if a.prefix is not None:
        raise ScenarioError("shared prefixes are prompt tokens of an LLM; classic serving has "
                            "no prompt; valid: no prefix", field="workload.arrivals.prefix")
    if a.process in ("trace", "closed"):
        raise ScenarioError(f"classic serving takes open-loop arrivals; valid: process poisson, "
                            f"gamma or constant, not {a.process!r}", field="workload.arrivals")
    try:
        reqs = open_loop(a.process, rate_per_s=a.rate_per_s, requests=a.requests, prompt=1,
                         output=1, rng=np.random.default_rng(s.seed), cv=a.cv, start_s=a.start)
    except ValueError as err:
        raise ScenarioError(str(err), field="workload.arrivals") from None
    seq = w.seq_len or getattr(spec, "seq_len", None)

    def forward(b: int):
        return model_ops(spec, micro_batch=b, precision=w.precision, seq_len=seq).forward
    slo = w.slo
    return BatchingPlan(job=job, forward=forward,
                        weight_bytes=spec.params() * storage_bytes(w.precision),
                        replicas=tuple(devices[:par.replicas]), precision=w.precision,
                        requests=tuple(reqs), max_batch_size=w.scheduler.max_batch_size or 256,
                        max_queue_delay_s=w.scheduler.max_queue_delay_s,
                        slo_ttft_s=slo.ttft_s if slo else None,
                        slo_tpot_s=slo.tpot_s if slo else None,
                        router="round_robin" if w.router == "round_robin" else "least_outstanding")
