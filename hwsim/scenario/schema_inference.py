"""Scenario schema, inference parts: parallelism of a replica, the scheduler, the arrivals, the
service-level objectives (DESIGN.md, "Inference workloads"). Re-exported by
:mod:`hwsim.scenario.schema`, whose ``InferenceWorkload`` holds them; ``docs/scenarios.md``
documents every field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from hwsim.scenario.schema_cluster import Count, Duration, PosInt, StrictModel

__all__ = ["ServingParallelism", "Scheduler", "Arrivals", "Prefix", "Slo", "TokenCount"]


class ServingParallelism(StrictModel):
    """Devices of one replica (``tp x pp``) and how many replicas serve; ``prefill_replicas``
    > 0 disaggregates: that many replicas only prefill, the others only decode, and each
    sequence's KV cache moves from one to the other over the graph's links. ``ep`` splits a
    MoE model's routed experts into ``ep`` groups (expert parallelism); ``attention_dp`` runs
    attention data-parallel over those groups, each of ``tp`` devices (a replica is then
    ``tp x ep x pp`` devices; :mod:`hwsim.workloads.moe`)."""

    tp: PosInt = 1
    pp: PosInt = 1
    replicas: PosInt = 1
    prefill_replicas: Count = 0
    ep: PosInt = 1
    attention_dp: bool = False


class Scheduler(StrictModel):
    """How a replica batches: ``continuous`` (iteration-level, vLLM/Orca) or ``static`` (a batch
    runs to its end) for LLMs; ``dynamic`` for classic models (a batch leaves when it holds
    ``max_batch_size`` requests or its oldest has waited ``max_queue_delay_s``); ``chunked_prefill`` splits prompts to fill ``max_batched_tokens`` next to
    the decodes (Sarathi); ``block_tokens`` is the paged KV cache's block; ``memory_fraction`` of
    each device's memory holds weights and KV cache (vLLM's ``gpu_memory_utilization``);
    ``preemption``: a sequence evicted when the KV cache is full is recomputed later
    (``recompute``) or its cache copied to host memory and back (``swap``);
    ``no_evict``: a sequence is admitted only when the KV blocks of its prompt and its whole
    output are free, and reserves them: nothing is ever preempted (TensorRT-LLM's
    ``GUARANTEED_NO_EVICT``); without it blocks are taken as tokens arrive and the newest
    sequence is preempted when they run out (vLLM, SGLang);
    ``prefix_caching``: the KV blocks of shared prompt prefixes (``arrivals.prefix``, a
    trace's ``prefix_id``) stay cached and later requests that start with them do not prefill
    them again (vLLM's ``enable_prefix_caching``, SGLang's radix cache; off unless set). A
    field left out among ``max_batch_size``, ``max_batched_tokens``, ``chunked_prefill``,
    ``no_evict``, ``block_tokens``, ``memory_fraction`` takes the serving engine's default
    (``workload.engine``, hwsim/catalog/data/engines.yaml); classic models (dynamic batching)
    default to ``max_batch_size`` 256. ``fast_forward`` (default true) advances the decode
    iterations of an unchanged batch in one step (the same results; false: one at a time)."""

    policy: Literal["continuous", "static", "dynamic"] = "continuous"
    max_batch_size: PosInt | None = None
    max_batched_tokens: PosInt | None = None
    chunked_prefill: bool | None = None
    no_evict: bool | None = None
    block_tokens: PosInt | None = None
    memory_fraction: float | None = Field(None, gt=0, le=1)
    preemption: Literal["recompute", "swap"] = "recompute"
    max_queue_delay_s: Duration = 0.0
    prefix_caching: bool = False
    fast_forward: bool = True

    @model_validator(mode="after")
    def _prefix_caching(self) -> Scheduler:
        if self.prefix_caching and self.policy == "dynamic":
            raise ValueError("prefix_caching caches an LLM's KV blocks; policy 'dynamic' serves "
                             "classic models; valid: policy continuous or static, or "
                             "prefix_caching: false")
        return self


class TokenCount(StrictModel):
    """A token-count distribution: ``uniform`` (``low``..``high``), ``normal`` (``mean``,
    ``std``), ``lognormal`` (``median``, ``sigma``), or ``choice`` of ``values``."""

    dist: Literal["uniform", "normal", "lognormal", "choice"]
    low: PosInt | None = None
    high: PosInt | None = None
    mean: float | None = Field(None, gt=0)
    std: float | None = Field(None, ge=0)
    median: float | None = Field(None, gt=0)
    sigma: float | None = Field(None, ge=0)
    values: list[PosInt] | None = None

    @model_validator(mode="after")
    def _fields(self) -> TokenCount:
        need = {"uniform": ("low", "high"), "normal": ("mean", "std"),
                "lognormal": ("median", "sigma"), "choice": ("values",)}[self.dist]
        missing = [k for k in need if getattr(self, k) is None]
        extra = [k for k in ("low", "high", "mean", "std", "median", "sigma", "values")
                 if k not in need and getattr(self, k) is not None]
        if missing or extra:
            raise ValueError(f"dist {self.dist!r} takes {', '.join(need)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; not {', '.join(extra)}" if extra else ""))
        if self.dist == "uniform" and self.low > self.high:
            raise ValueError(f"low={self.low} > high={self.high}")
        return self

    def as_spec(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Prefix(StrictModel):
    """Shared prompt prefixes: ``groups`` distinct prefixes of ``tokens`` tokens each (a
    number, or a :class:`TokenCount` drawn once per group); each request starts with one of
    them with probability ``share``, the group picked by ``popularity`` (``uniform``, or
    ``zipf``: group *k* with probability proportional to ``k**-zipf_s``); its prompt is then
    the prefix followed by its own ``prompt_tokens``. A system prompt: ``{tokens: 1000}``; many
    tenants: ``{groups: 100, tokens: 2000, popularity: zipf, zipf_s: 1.1}``."""

    tokens: PosInt | TokenCount
    groups: PosInt = 1
    share: float = Field(1.0, ge=0, le=1)
    popularity: Literal["uniform", "zipf"] = "uniform"
    zipf_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _zipf(self) -> Prefix:
        if self.popularity != "zipf" and self.zipf_s != 1.0:
            raise ValueError(f"zipf_s={self.zipf_s:g} applies to popularity 'zipf' only, not "
                             f"{self.popularity!r}")
        return self

    def as_spec(self) -> dict[str, Any]:
        spec = self.model_dump()
        if not isinstance(self.tokens, int):
            spec["tokens"] = self.tokens.as_spec()
        return spec


class Arrivals(StrictModel):
    """Requests: an open-loop process (``poisson``, ``gamma`` with coefficient of variation
    ``cv``, ``constant``) at ``rate_per_s`` for ``requests`` requests, the rows of a CSV
    ``trace`` (columns ``arrival_s, prompt_tokens, output_tokens``; a relative path is read from
    the scenario's folder), or a ``closed`` loop of ``clients`` that each send a request, wait
    for its last token, think (exponential, mean ``think_s``) and send the next, ``requests`` in
    all. Token counts: a number or a :class:`TokenCount`. ``prefix``: requests that share
    prompt prefixes (:class:`Prefix`); a trace gives them as columns ``prefix_id,
    prefix_tokens`` instead."""

    process: Literal["poisson", "gamma", "constant", "trace", "closed"] = "poisson"
    rate_per_s: float | None = Field(None, gt=0)
    requests: PosInt | None = None
    clients: PosInt | None = None
    think_s: Duration = 0.0
    cv: float = Field(1.0, gt=0)
    prompt_tokens: PosInt | TokenCount = 512
    output_tokens: PosInt | TokenCount = 128
    trace: str | None = None
    start: Duration = 0.0
    prefix: Prefix | None = None

    @model_validator(mode="after")
    def _process(self) -> Arrivals:
        if self.process == "trace":
            if self.trace is None:
                raise ValueError("process 'trace' needs trace: a CSV file with columns "
                                 "arrival_s, prompt_tokens, output_tokens")
            if self.prefix is not None:
                raise ValueError("prefix is for generated arrivals; a trace gives its shared "
                                 "prefixes as columns prefix_id, prefix_tokens")
        elif self.process == "closed":
            missing = [k for k in ("clients", "requests") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"process 'closed' needs {' and '.join(missing)} (e.g. "
                                 "clients: 16, requests: 1000, think_s: 2.0)")
            if self.rate_per_s is not None:
                raise ValueError("process 'closed' has no rate_per_s: the clients' think time "
                                 "and the service set the rate")
        else:
            missing = [k for k in ("rate_per_s", "requests") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"process {self.process!r} needs {' and '.join(missing)} "
                                 "(e.g. rate_per_s: 2.0, requests: 1000)")
            if self.trace is not None:
                raise ValueError(f"trace is only read with process: trace, not {self.process!r}")
            if self.clients is not None:
                raise ValueError(f"clients belong to process: closed, not {self.process!r}")
        return self


class Slo(StrictModel):
    """Service-level objectives: a request attains its SLO when its time to first token and its
    time per output token are within these (either may be omitted)."""

    ttft_s: Duration | None = None
    tpot_s: Duration | None = None
