"""The scenario schema: strict, frozen pydantic models of a scenario file (DESIGN.md "Contracts").

A :class:`Scenario` has a ``name``, a ``seed``, a :class:`~hwsim.scenario.schema_cluster.Cluster`
(defined with its parts in :mod:`hwsim.scenario.schema_cluster` and re-exported here), a workload
(:class:`TrainingWorkload`, :class:`TransferWorkload` or :class:`InferenceWorkload`, told apart by
``kind``) -- or, on a shared cluster, ``jobs``: named :class:`Job` s, each with its workload,
arrival time and placement -- and :class:`Outputs`. Every model forbids unknown keys and is
frozen. Quantities may be SI numbers or strings with units (``"10 TB"``, ``"1.5 us"``).
``docs/scenarios.md`` documents every field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from hwsim.scenario.schema_cluster import (Bandwidth, Cluster, Count, Duration, ExplicitGraph,
                                          Fabric, GraphLink, GraphNode, NodeSpec, PosInt, Site,
                                          Size, StorageEntry, StrictModel, WanLink, did_you_mean)
from hwsim.scenario.schema_inference import Arrivals, Scheduler, ServingParallelism, Slo
from hwsim.scenario.schema_power import Power
from hwsim.scenario.schema_resilience import Failures, Mtbf, ScriptedFailureEntry

__all__ = [
    "Scenario", "Cluster", "NodeSpec", "Fabric", "StorageEntry", "Site", "WanLink", "ExplicitGraph",
    "GraphNode", "GraphLink", "Workload", "TrainingWorkload", "TransferWorkload", "Transfer",
    "InferenceWorkload", "DataLoaderWorkload", "Arrivals", "Scheduler", "ServingParallelism",
    "Slo", "Failures", "Mtbf", "ScriptedFailureEntry", "ModelRef", "Parallelism", "DataSpec",
    "Collective", "Checkpoint", "Outputs", "Limits", "Job", "MODEL_PRESETS", "WORKLOAD_KINDS",
    "PLACEMENTS", "Speculative", "Power",
    "Size", "Duration", "Bandwidth",
]

MODEL_PRESETS = ("mlp", "logistic-regression", "resnet50", "bert-large", "gpt3-175b", "llama2-7b",
                 "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3-405b",
                 "mixtral-8x7b", "dlrm")
"""Model presets a ``workload.model.preset`` may name."""
WORKLOAD_KINDS = ("training", "transfer", "inference", "dataloader")
"""Values of ``workload.kind``."""
PLACEMENTS = ("packed", "spread", "first_fit")
"""Values of ``jobs[].placement`` (see :func:`hwsim.scenario.build_jobs.place`)."""
_MLP_DEFAULTS = {"features": 1024, "width": 4096, "depth": 4, "outputs": 1024, "activation": "relu"}
_MLP_ACTIVATIONS = ("sigmoid", "relu", "gelu", "tanh")
_ARCH_FIELDS = ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab")
_ARCH_ACTIVATIONS = ("gelu", "relu", "swiglu", "geglu", "silu")


class ModelRef(StrictModel):
    """The model: one of ``preset``, ``hf_config`` (a path) or explicit transformer fields.

    A bare string is a preset (``model: gpt3-175b``). Preset ``mlp`` fills ``features``,
    ``width``, ``depth``, ``outputs`` and ``activation`` (1024, 4096, 4, 1024, relu); preset
    ``logistic-regression`` fills ``features`` (100). Explicit fields fill ``kv_heads`` (=
    ``heads``), ``ffn_hidden`` (4 x ``hidden``) and ``activation`` (gelu).
    """

    preset: str | None = None
    hf_config: str | None = None
    layers: PosInt | None = None
    hidden: PosInt | None = None
    heads: PosInt | None = None
    kv_heads: PosInt | None = None
    ffn_hidden: PosInt | None = None
    vocab: PosInt | None = None
    activation: str | None = None
    features: PosInt | None = None
    width: PosInt | None = None
    depth: Count | None = None
    outputs: PosInt | None = None
    experts: PosInt | None = None
    top_k: PosInt | None = None
    expert_ffn_hidden: PosInt | None = None
    shared_ffn_hidden: Count | None = None
    dense_layers: Count | None = None
    """Explicit transformer fields only: a mixture of ``experts`` routed experts, ``top_k`` per
    token; DeepSeek-style layers (serving only) give each routed expert ``expert_ffn_hidden``
    columns, ``shared_ffn_hidden`` columns of shared experts every token runs through, and keep
    the first ``dense_layers`` dense (``ffn_hidden``)."""
    dropout: bool | None = None
    """Explicit transformer fields only: whether the model trains with dropout (its masks kept
    for backward, its ops run). Default: GPT-style activations (gelu, relu) yes, Llama-style
    (swiglu, geglu, silu) no; MPT, for one, trains GELU without dropout."""
    flash_attention: bool | None = None
    """Transformers only: whether attention runs as a fused FlashAttention kernel (no s x s
    scores in memory). Default true; set false for runs that predate it (2022)."""

    @model_validator(mode="before")
    @classmethod
    def _form(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"preset": data}
        if not isinstance(data, dict):
            return data
        d = dict(data)
        forms = [k for k in ("preset", "hf_config") if d.get(k) is not None]
        d = {k: v for k, v in d.items() if v is not None}
        forms += ["explicit fields"] if any(k in d for k in _ARCH_FIELDS) else []
        if len(forms) != 1:
            raise ValueError(f"give exactly one of preset, hf_config or explicit fields (layers, "
                             f"hidden, heads, ...); got {', '.join(forms) or 'none'}")
        if d.get("flash_attention") is not None and str(d.get("preset", "")).lower() in (
                "mlp", "logistic-regression", "resnet50", "dlrm"):
            raise ValueError(f"flash_attention applies to transformer models only, not preset "
                             f"{d['preset']!r}")
        mlp_keys = [k for k in _MLP_DEFAULTS if k in d]
        preset = str(d["preset"]).lower() if d.get("preset") is not None else None
        if preset is not None and preset not in MODEL_PRESETS:
            raise ValueError(f"preset: unknown preset {d['preset']!r}; valid presets: "
                             f"{', '.join(MODEL_PRESETS)}{did_you_mean(preset, MODEL_PRESETS)}")
        if preset is not None:
            d["preset"] = preset
        allowed = {"mlp": set(_MLP_DEFAULTS), "logistic-regression": {"features"}}.get(
            preset or "", {"activation"} if "explicit fields" in forms else set())
        wrong = [k for k in mlp_keys if k not in allowed]
        if wrong:
            where = f"preset {preset!r}" if preset else forms[0]
            raise ValueError(f"{', '.join(wrong)} cannot be used with {where}; features, width, "
                             "depth, outputs and activation belong to preset 'mlp' (features also "
                             "to 'logistic-regression')")
        if preset == "mlp":
            d = {**_MLP_DEFAULTS, **d}
            if d["activation"] not in _MLP_ACTIVATIONS:
                raise ValueError(f"activation: {d['activation']!r} is not valid for preset 'mlp'; "
                                 f"valid: {', '.join(_MLP_ACTIVATIONS)}")
        elif preset == "logistic-regression":
            d.setdefault("features", 100)
        elif "explicit fields" in forms:
            missing = [k for k in ("layers", "hidden", "heads", "vocab") if d.get(k) is None]
            if missing:
                raise ValueError(f"explicit model fields need {', '.join(missing)} (e.g. layers: "
                                 "96, hidden: 12288, heads: 96, vocab: 51200)")
            d.setdefault("activation", "gelu")
            d.setdefault("kv_heads", d["heads"])
            if isinstance(d["hidden"], int) and not isinstance(d["hidden"], bool):
                d.setdefault("ffn_hidden", 4 * d["hidden"])
            if d["activation"] not in _ARCH_ACTIVATIONS:
                raise ValueError(f"activation: {d['activation']!r} is not valid for a transformer; "
                                 f"valid: {', '.join(_ARCH_ACTIVATIONS)}")
        return d


class Parallelism(StrictModel):
    """Degrees of tensor, pipeline, data, context and expert parallelism; ``dp`` None = derived
    from the device count. ``torus_order`` (TPU tori only): the torus axes that consecutive
    ranks step along, fastest first (``[z, x, y]``: tensor-parallel groups along z), as a JAX
    device mesh maps its axes onto the physical ones; default: the chips' natural (name)
    order, ``tpu{x}_{y}_{z}``: z fastest, as ``[z, y, x]``."""

    tp: PosInt = 1
    pp: PosInt = 1
    dp: PosInt | None = None
    cp: PosInt = 1
    ep: PosInt = 1
    micro_batch: PosInt | None = None
    virtual_stages: PosInt = 1
    sequence_parallel: bool = False
    zero: Literal[0, 1, 2, 3] = 0
    recompute: Literal["none", "selective", "full"] = "none"
    offload: Literal["none", "cpu", "nvme"] = "none"
    offload_params: bool = False
    torus_order: list[Literal["x", "y", "z"]] | None = None

    @field_validator("torus_order")
    @classmethod
    def _axes_once(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"{v} names an axis twice; valid: each axis of the torus once, "
                             "e.g. [z, x, y]")
        return v


class DataSpec(StrictModel):
    """Where training samples are read from, and how they are prepared (docs/scenarios.md
    "Input pipelines").

    ``samples`` of ``sample_bytes`` each, stored ``samples_per_file`` to a file (1: one file per
    sample; more: record files such as TFRecord shards). ``request_bytes`` defaults to the file
    size (``sample_bytes x samples_per_file``) for ``random`` access, 1 MiB for ``sequential``.
    ``workers`` loader workers per rank each keep ``prefetch`` batches outstanding and decode on
    one of the server's hardware threads for ``decode_s_per_sample`` per sample. ``page_cache``:
    after the first epoch, reads the server's host memory holds come from RAM
    (``page_cache_bytes`` caps what it may hold; default: the host memory).
    """

    storage: str = Field(min_length=1)
    samples: PosInt
    sample_bytes: Size
    samples_per_file: PosInt = 1
    access: Literal["random", "sequential"] = "random"
    request_bytes: Size | None = None
    workers: PosInt = 1
    prefetch: Count = 2
    decode_s_per_sample: Duration = 0.0
    page_cache: bool = True
    page_cache_bytes: Size | None = None

    @model_validator(mode="after")
    def _request(self) -> DataSpec:
        # filled in after validation, from parsed fields: copying the raw sample_bytes in a
        # "before" validator made a bad sample_bytes also fail as request_bytes (issue 12)
        if self.request_bytes is None:  # random access: whole files (a sample or a record file)
            object.__setattr__(self, "request_bytes", float(2**20) if self.access == "sequential"
                               else self.sample_bytes * self.samples_per_file)
        return self


class Collective(StrictModel):
    """The collective algorithm used for gradient and activation exchanges, and whether a
    collective that shares its links takes its closed-form time while they are idle."""

    algorithm: Literal["auto", "ring", "tree", "nvls", "hierarchical", "mesh"] = "auto"
    closed_form: bool = True


class Checkpoint(StrictModel):
    """Periodic checkpoints: to ``storage`` (a storage entry name or node id, as for
    ``data.storage``, or ``local``: each server's own drive) after every ``every_steps`` steps,
    ``sync`` (training waits until the write is durable) or ``async`` (it waits for the copy to
    host memory; the write drains in the background). ``include_optimizer: false`` saves the
    weights only. ``writer_bw`` caps one rank's write and read rate (serialisation and a
    single-stream file write); ``request_bytes`` is the I/O size at the tier."""

    storage: str = Field(min_length=1)
    every_steps: PosInt
    mode: Literal["sync", "async"] = "sync"
    include_optimizer: bool = True
    writer_bw: Bandwidth | None = None
    request_bytes: Size = float(16 * 2**20)


DEFAULT_STEPS = 2
"""Training steps simulated when a workload without an input pipeline gives neither ``steps`` nor
``epochs``: one warm-up step and the measured one (the summary's steady state drops the first)."""
DEFAULT_STEPS_WITH_DATA = 10
"""The same with ``data``: enough rounds for the loader's prefetch queues to reach steady state."""


class TrainingWorkload(StrictModel):
    """Training a model. Without ``steps`` or ``epochs``, ``steps`` is what a step-time question
    needs: 2 (a warm-up step, then the step the summary measures) for a workload without an
    input pipeline, whose steps are identical once the first has filled the pipeline; 10 with
    ``data`` (the loader's workers and prefetch queues take several steps to reach their
    steady state). ``time_to_train_s`` extrapolates from the measured steps either way."""

    kind: Literal["training"]
    model: ModelRef
    seq_len: PosInt | None = None
    precision: Literal["fp32", "tf32", "fp16", "bf16", "fp8", "fp4"] = "fp32"
    global_batch: PosInt
    parallelism: Parallelism = Parallelism()
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    loss: Literal["bce", "cross_entropy", "mse"] = "cross_entropy"
    steps: PosInt | None = None
    epochs: float | None = Field(None, gt=0)
    train_tokens: float | None = Field(None, gt=0)
    train_samples: float | None = Field(None, gt=0)
    data: DataSpec | None = None
    device: Literal["gpu", "cpu", "tpu"] | None = None
    framework_overhead: Duration | None = None
    stack: str | None = None
    collective: Collective = Collective()
    fold: Literal["auto"] | bool = "auto"
    steady_state: bool = True
    checkpoint: Checkpoint | None = None
    failures: Failures | None = None

    @model_validator(mode="before")
    @classmethod
    def _steps(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("steps") is not None and data.get("epochs") is not None:
            raise ValueError("steps and epochs are mutually exclusive; give one of them")
        if data.get("steps") is None and data.get("epochs") is None:
            data = {**data, "steps": DEFAULT_STEPS_WITH_DATA if data.get("data") is not None
                    else DEFAULT_STEPS}
        return data

    @model_validator(mode="after")
    def _epochs(self) -> TrainingWorkload:
        if self.epochs is not None and self.data is None:
            raise ValueError("epochs needs data (the data set to sweep); give steps instead")
        if self.stack is not None:
            from hwsim.catalog.stacks import load_stacks

            stacks = load_stacks()
            if self.stack not in stacks.profiles:
                raise ValueError(
                    f"stack: unknown software stack {self.stack!r}; valid: "
                    f"{', '.join(stacks.profiles)} (profiles in hwsim/catalog/data/stacks.yaml, "
                    f"docs/model.md; leave it out for the default: "
                    f"{stacks.default['transformer']} for transformer models, "
                    f"{stacks.default['other']} for the others)")
        return self


class Transfer(StrictModel):
    """One bulk transfer between two endpoints (storage entry names or graph node ids)."""

    name: str = Field(min_length=1)
    src: str = Field(min_length=1)
    dst: str = Field(min_length=1)
    size: Size
    start: Duration = 0.0
    request_bytes: Size = float(2**20)
    streams: PosInt = 1


class TransferWorkload(StrictModel):
    """A set of bulk transfers (data staging, checkpoint copies, replication)."""

    kind: Literal["transfer"]
    transfers: list[Transfer] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> TransferWorkload:
        names = [t.name for t in self.transfers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"transfer names must be unique; repeated: {', '.join(repeated)}")
        return self


class Speculative(StrictModel):
    """Speculative decoding: each decode step a proposer (``draft``: a smaller model,
    ``draft_model``; ``ngram``: prompt lookup; ``mtp``: the target's multi-token-prediction
    modules) guesses ``tokens`` tokens, which the target verifies in one pass, keeping each
    with probability ``acceptance`` up to the first it rejects, plus one of its own."""

    method: Literal["draft", "ngram", "mtp"]
    tokens: PosInt
    acceptance: float = Field(ge=0, le=1)
    draft_model: ModelRef | None = None

    @model_validator(mode="after")
    def _draft(self) -> Speculative:
        if self.method == "draft" and self.draft_model is None:
            raise ValueError("method 'draft' needs draft_model: the smaller model that proposes "
                             "(e.g. draft_model: llama2-7b)")
        if self.method != "draft" and self.draft_model is not None:
            raise ValueError(f"draft_model belongs to method 'draft', not {self.method!r}")
        return self


class InferenceWorkload(StrictModel):
    """Serving a model (an LLM: prefill and decode with a paged KV cache) to arriving requests;
    the parts are in :mod:`hwsim.scenario.schema_inference`. ``precision`` is the GEMMs' (and,
    by default, the weights'); ``weight_precision`` stores the weights narrower (``int4`` in
    groups of ``weight_group_size``, default 128; weight-only formats are widened inside the
    GEMMs; ``fp4`` is NVFP4, ``mxfp4`` the OCP MX format: :mod:`hwsim.workloads.quant`; ``precision:
    fp4`` needs a device with fp4 matrix units, e.g. B200, MI355X); ``kv_precision`` the KV cache (default: the activations'). ``engine`` names a
    serving-engine profile (``vllm``, ``trtllm``, ``sglang``; default ``vllm``)."""

    @model_validator(mode="after")
    def _quant(self) -> InferenceWorkload:
        if self.weight_group_size is not None and self.weight_precision != "int4":
            raise ValueError(f"weight_group_size applies to weight_precision int4 only, not "
                             f"{self.weight_precision or self.precision!r}")
        if self.precision in ("fp8", "int8") and self.weight_precision in ("fp16", "bf16"):
            raise ValueError(f"precision {self.precision!r} runs GEMMs on {self.precision} "
                             f"inputs: weights stored in {self.weight_precision} would be "
                             f"quantised on every use; valid: weight_precision "
                             f"{self.precision} (or leave it out)")
        if self.precision == "fp4" and self.weight_precision not in (None, "fp4", "mxfp4"):
            raise ValueError(f"precision 'fp4' runs GEMMs on 4-bit inputs: weights stored in "
                             f"{self.weight_precision} would be quantised on every use; valid: "
                             f"weight_precision fp4 (NVFP4, the default) or mxfp4")
        return self

    kind: Literal["inference"]
    model: ModelRef
    seq_len: PosInt | None = None
    precision: Literal["fp32", "tf32", "fp16", "bf16", "fp8", "fp4", "int8"] = "bf16"
    weight_precision: Literal["fp16", "bf16", "fp8", "int8", "int4", "fp4", "mxfp4"] | None = None
    weight_group_size: PosInt | None = None
    kv_precision: Literal["fp16", "bf16", "fp8", "int8"] | None = None
    engine: str | None = None
    expert_skew: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Zipf exponent of the routed experts' popularity (0: uniform routing); with
    ``parallelism.ep`` > 1 the expert ranks' loads are drawn from it every iteration."""
    parallelism: ServingParallelism = ServingParallelism()
    scheduler: Scheduler = Scheduler()
    arrivals: Arrivals
    slo: Slo | None = None
    router: Literal["round_robin", "least_outstanding", "kv_aware"] = "round_robin"
    speculative: Speculative | None = None


class DataLoaderWorkload(StrictModel):
    """A storage benchmark in the manner of MLPerf Storage (DLIO): ``accelerators`` emulated
    accelerators on one server each take ``batch`` samples through the input pipeline of
    ``data`` and "compute" for ``computation_time`` per batch (a sleep); the result is the
    accelerator utilization (compute time over wall time)."""

    kind: Literal["dataloader"]
    accelerators: PosInt
    batch: PosInt
    computation_time: Duration
    steps: PosInt = 20
    data: DataSpec


Workload = Annotated[TrainingWorkload | TransferWorkload | InferenceWorkload | DataLoaderWorkload,
                     Field(discriminator="kind")]
"""A workload; ``kind`` picks the model (one of :data:`WORKLOAD_KINDS`)."""


class Outputs(StrictModel):
    """Which result tables and files to produce; ``utilization_bin_s`` None = automatic.
    ``record``: what a run keeps of its activity (docs/scenarios.md, "Outputs"): ``ops``
    (default) records every op, but a serving replica's fast-forwarded decode iterations as one
    event per device for each stretch of them with the same bound; ``full`` records every
    serving iteration as its own event (for other workloads it is ``ops``); ``summary`` keeps no
    per-activity events (events.parquet and trace.json are not written), only what the summary,
    the bottleneck breakdown and the utilization need. The summary is the same at every
    level."""

    events: bool = True
    utilization: bool = True
    trace: bool = True
    utilization_bin_s: Duration | None = Field(None, gt=0)
    record: Literal["full", "ops", "summary"] = "ops"


class Limits(StrictModel):
    """The size/event budget of a run (:mod:`hwsim.scenario.budget`): a scenario whose estimate
    is beyond it is refused before anything is built. None = the default
    (:data:`~hwsim.scenario.budget.DEFAULT_MAX_EVENTS`, ``DEFAULT_MAX_DEVICES``); ``hwsim run
    --max-events`` overrides ``max_events``."""

    max_events: PosInt | None = None
    max_devices: PosInt | None = None


class Job(StrictModel):
    """One job of a shared cluster (``jobs:``): a named workload that arrives at ``start`` and
    runs on its own devices -- ``devices`` of them chosen by ``placement`` (default ``packed``),
    or the ``nodes`` listed -- while sharing links, storage and hosts with the other jobs.
    Transfer jobs move data between their endpoints and take no devices."""

    name: str = Field(min_length=1)
    workload: Workload
    start: Duration = 0.0
    devices: PosInt | None = None
    placement: Literal["packed", "spread", "first_fit"] | None = None
    nodes: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _placement(self) -> Job:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ValueError(f"name: {self.name!r} is not a valid job name; it becomes part of "
                             f"the summary keys job.<name>.<key>: use letters, digits, _ and -")
        if isinstance(self.workload, TransferWorkload):
            given = [k for k in ("devices", "placement", "nodes") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{given[0]}: a transfer job moves data between its endpoints "
                                 f"and takes no devices; remove {', '.join(given)}")
            return self
        if getattr(self.workload, "failures", None) is not None:
            raise ValueError("workload.failures: failures are played over the whole run of a "
                             "single-workload scenario, not for one job of a shared cluster; "
                             "move the job to its own scenario (workload: ...) or remove failures")
        if self.devices is None and self.nodes is None:
            raise ValueError("a training or inference job needs its devices: give devices: N "
                             "(with placement: packed, spread or first_fit) or nodes: [ids]")
        if self.nodes is not None and (self.devices is not None or self.placement is not None):
            raise ValueError("nodes: give either nodes (explicit device ids) or devices with "
                             "placement, not both")
        if self.nodes is not None and len(set(self.nodes)) != len(self.nodes):
            raise ValueError("nodes: a device is listed twice")
        return self


class Scenario(StrictModel):
    """A whole scenario file: what runs (``workload``, or ``jobs`` sharing the cluster), on what
    (``cluster``), what to record."""

    name: str = Field(min_length=1)
    seed: Count = 0
    description: str = ""
    cluster: Cluster
    workload: Workload | None = None
    jobs: list[Job] | None = Field(None, min_length=1)
    outputs: Outputs = Outputs()
    limits: Limits = Limits()
    power: Power = Power()
    """Facility PUE, rack power limit, GPU power cap (:mod:`hwsim.scenario.schema_power`)."""
    calibration: str | None = Field(None, min_length=1)
    """A calibration file written by ``hwsim calibrate`` (path relative to the scenario file):
    its fitted constants replace the catalog's for this scenario's run only
    (:mod:`hwsim.scenario.calibration`, docs/calibration.md)."""

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        if (self.workload is None) == (self.jobs is None):
            raise ValueError("give workload: (one job on the whole cluster) or jobs: (a list of "
                             "named jobs sharing it), " + (
                                 "not both" if self.jobs is not None else "one of them"))
        names = [j.name for j in self.jobs or []]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"jobs: job names must be unique; repeated: {', '.join(repeated)}")
        for prefix, w in self.workloads():
            self._check_workload(prefix, w)
        return self

    def _check_workload(self, prefix: str, w: Any) -> None:
        node = self.cluster.node
        if isinstance(w, (TrainingWorkload, DataLoaderWorkload)) and w.data is not None:
            names = self.storage_names()
            if w.data.storage not in names:
                raise ValueError(f"{prefix}.data.storage: unknown storage {w.data.storage!r}; "
                                 f"valid: {', '.join(names)}{did_you_mean(w.data.storage, names)}")
            if w.data.storage == "local" and node is not None and node.local_storage is None:
                raise ValueError(f"{prefix}.data.storage is 'local' but cluster.node has no "
                                 "local_storage (e.g. local_storage: nvme-gen4)")
        if self.cluster.stragglers and not isinstance(w, TrainingWorkload):
            raise ValueError(f"cluster.stragglers: slow training ops only; a {w.kind} workload "
                             "does not model them yet; valid: no stragglers (degraded_links "
                             "apply to every workload)")
        if isinstance(w, TrainingWorkload) and w.checkpoint is not None:
            names = [n for n in self.storage_names() if n != "memory"]
            where = w.checkpoint.storage
            if where not in names:
                raise ValueError(f"workload.checkpoint.storage: unknown storage {where!r}; "
                                 f"valid: {', '.join(names)}{did_you_mean(where, names)}")
            if where == "local" and node is not None and node.local_storage is None:
                raise ValueError("workload.checkpoint.storage is 'local' but cluster.node has no "
                                 "local_storage (e.g. local_storage: nvme-gen4)")
        if (isinstance(w, TrainingWorkload) and w.device in ("gpu", "tpu") and node is not None
                and getattr(node, w.device) is None):
            raise ValueError(f"{prefix}.device is {w.device!r} but cluster.node has no "
                             f"{w.device}; use device: cpu or set cluster.node.{w.device}")

    def workloads(self) -> list[tuple[str, Any]]:
        """``(field path, workload)`` of every workload: ``workload`` or each job's."""
        if self.jobs is None:
            return [("workload", self.workload)]
        return [(f"jobs[{i}].workload", j.workload) for i, j in enumerate(self.jobs)]

    def job_scenario(self, i: int) -> Scenario:
        """The scenario of job *i* alone: this one with ``workload`` = the job's (no ``jobs``);
        what the one-workload plan builders take."""
        assert self.jobs is not None
        return self.model_copy(update={"workload": self.jobs[i].workload, "jobs": None})

    def storage_names(self) -> list[str]:
        """Names ``workload.data.storage`` may take: the cluster's storage entries (``site/name``
        in the multi-site form, storage node ids in the explicit form), ``local`` and ``memory``."""
        c = self.cluster
        names = [e.name for e in c.storage]
        names += [f"{s.name}/{e.name}" for s in c.sites or [] for e in s.storage]
        names += [n.id for n in c.graph.nodes if n.kind == "storage"] if c.graph else []
        return names + ["local", "memory"]

    @property
    def compute_device(self) -> str | None:
        """Where a training model runs: ``workload.device``, else ``gpu``/``tpu`` when the nodes
        have them, else ``cpu``; None for workloads without a model."""
        w = self.workload
        if not isinstance(w, (TrainingWorkload, InferenceWorkload)):
            return None
        if getattr(w, "device", None) is not None:
            return w.device
        c = self.cluster
        nodes = c.node_specs()
        kinds = {n.kind for n in self.cluster.graph.nodes} if self.cluster.graph else set()
        for kind in ("gpu", "tpu"):
            if kind in kinds or any(getattr(n, kind) for n in nodes):
                return kind
        return "cpu"
