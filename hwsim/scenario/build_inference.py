"""The plan of an inference workload (:class:`~hwsim.jobs.serving.ServingPlan`): the model, the
replicas' devices, and the requests, drawn from the scenario's seed or read from its trace."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd

from hwsim.exceptions import ScenarioError
from hwsim.jobs.serving import ServingPlan
from hwsim.scenario.schema import InferenceWorkload, Scenario
from hwsim.topology import nodes_of_kind, server_index, server_peer
from hwsim.workloads import TransformerSpec, resolve_model
from hwsim.workloads.arrivals import Request, from_trace, open_loop, token_sampler

__all__ = ["serving_plan"]

_TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")


def serving_plan(s: Scenario, g: nx.Graph) -> ServingPlan:
    w = s.workload
    assert isinstance(w, InferenceWorkload)
    fields = w.model.model_dump(exclude_none=True)
    fields.pop("flash_attention", None)
    try:
        spec = resolve_model(fields)
    except ValueError as err:
        raise ScenarioError(str(err), field="workload.model") from None
    if not isinstance(spec, TransformerSpec) or spec.encoder:
        raise ScenarioError(f"model {spec.name!r} is not a decoder LLM; inference serves decoder "
                            "transformers (presets gpt3-175b, llama2-*, llama3-*, mixtral-8x7b, "
                            "or explicit layers/hidden/heads)", field="workload.model")
    par = w.parallelism
    kind = s.compute_device
    devices = nodes_of_kind(g, kind)
    per, need = par.tp * par.pp, par.tp * par.pp * par.replicas
    if len(devices) < need:
        raise ScenarioError(f"{par.replicas} replicas of tp x pp = {par.tp} x {par.pp} need {need} "
                            f"{kind} devices; the cluster has {len(devices)}; valid: replicas <= "
                            f"{len(devices) // per}", field="workload.parallelism")
    if spec.heads % par.tp:
        raise ScenarioError(f"tp={par.tp} must divide the model's {spec.heads} attention heads",
                            field="workload.parallelism.tp")
    replicas = tuple(tuple(devices[i * per:(i + 1) * per]) for i in range(par.replicas))
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
    sc = w.scheduler
    slo = w.slo
    hosts: tuple[tuple[str, str], ...] = ()
    if sc.preemption == "swap":
        index = server_index(g)
        pairs = [(d, server_peer(g, d, "memory", index)) for r in replicas for d in r]
        if any(h is None for _, h in pairs):
            raise ScenarioError("preemption: swap needs host memory on every server (a node "
                                "with host_memory); valid: preemption: recompute",
                                field="workload.scheduler.preemption")
        hosts = tuple(pairs)
    try:
        return ServingPlan(job="serve", spec=spec, replicas=replicas, tp=par.tp, pp=par.pp,
                           precision=w.precision, requests=tuple(requests), policy=sc.policy,
                           max_batch_size=sc.max_batch_size,
                           max_batched_tokens=sc.max_batched_tokens,
                           chunked_prefill=sc.chunked_prefill, block_tokens=sc.block_tokens,
                           memory_fraction=sc.memory_fraction, router=w.router,
                           slo_ttft_s=slo.ttft_s if slo else None,
                           slo_tpot_s=slo.tpot_s if slo else None,
                           clients=a.clients if a.process == "closed" else 0, think_s=think,
                           preemption=sc.preemption, hosts=hosts,
                           prefill_replicas=par.prefill_replicas)
    except ValueError as err:
        field = ("workload.parallelism.prefill_replicas" if "prefill_replicas" in str(err)
                 or "disaggregation" in str(err) else "workload.scheduler")
        raise ScenarioError(str(err), field=field) from None


def _read_trace(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ScenarioError(f"cannot read request trace {path!r}: {err}",
                            field="workload.arrivals.trace") from None
    missing = [c for c in _TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise ScenarioError(f"request trace {path!r} lacks column(s) {', '.join(missing)}; it "
                            f"needs {', '.join(_TRACE_COLUMNS)}", field="workload.arrivals.trace")
    return tuple(df[c].to_numpy() for c in _TRACE_COLUMNS)
