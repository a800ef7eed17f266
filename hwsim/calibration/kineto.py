"""A PyTorch profiler (Kineto) trace of one training step, read and fitted.

The trace is Chrome trace format JSON as ``torch.profiler`` exports it
(``prof.export_chrome_trace``; pytorch.org/docs "torch.profiler"): ``traceEvents`` with
``ph: "X"`` complete events, ``ts`` and ``dur`` in microseconds, ``cat`` ``kernel`` (GPU kernels,
``args.stream``, ``args["External id"]``), ``gpu_memcpy``/``gpu_memset``, ``cpu_op`` (ATen ops;
with ``record_shapes=True`` their ``args["Input Dims"]`` and ``args["Input type"]``, with
``with_flops=True`` ``args.flops``) and ``cuda_runtime`` (``cudaLaunchKernel``). A kernel is tied
to the op that launched it by ``External id``.

Kernels are classified by name (:func:`kernel_class`): ``gemm`` (cuBLAS/CUTLASS: names with
gemm, cutlass or xmma: ``ampere_*gemm``, ``sm90_xmma_*``), ``attention`` (flash / fmha), ``nccl``
(``ncclKernel``/``ncclDevKernel``), ``memory`` (every other kernel: elementwise, norms,
reductions, copies). :func:`hwsim.calibration.stages.fit_traces` then sets, for the device the
trace ran on:

- ``compute_efficiency`` (the kernel model's large-GEMM ceiling): the value at which the model's
  total GEMM time equals the measured total. A GEMM whose launching op gives its shape (mm,
  addmm, bmm, baddbmm, matmul, linear: :func:`gemm_shape`) is timed by the kernel model
  (:mod:`hwsim.catalog.kernels`: tiles, waves, the fixed ``gemm_latency``), one without a shape
  (only ``args.flops``) by the FLOP ramp; either way its time is ``a / compute_efficiency + b``
  (``b`` the fixed latency), so the value is the closed form ``sum(a) / (sum(measured) -
  sum(b))``. No software-stack factor is applied: these are the kernels as they ran.
- ``memory_efficiency``: the same for the memory-bound kernels of at least 1 MiB, their bytes
  read and written estimated from the launching op's input shapes and types (every input once,
  plus one output the size of the largest input).
- ``launch_overhead_s``: the median interval between consecutive kernel launches
  (``cudaLaunchKernel``) of one host thread, intervals over 1 ms (synchronisations, Python work)
  left out; without runtime events, the median start-to-start interval of consecutive kernels of
  a stream that the GPU waited between.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwsim.catalog.specs import DeviceSpec
from hwsim.exceptions import ScenarioError

__all__ = ["Kernel", "Trace", "read_trace", "parse_trace", "kernel_class", "gemm_shape",
           "model_time", "fittable", "DTYPE_OF", "MIN_MEMORY_BYTES"]

_GEMM = re.compile(r"gemm|cutlass|xmma", re.I)
_ATTN = re.compile(r"flash|fmha|attention|sdpa", re.I)
_NCCL = re.compile(r"nccl(?:Dev)?Kernel|ncclKernel", re.I)
DTYPE_OF = {"c10::BFloat16": "bf16", "c10::Half": "fp16", "float": "fp32", "double": "fp64",
            "c10::Float8_e4m3fn": "fp8", "c10::Float8_e5m2": "fp8"}
"""ATen ``Input type`` -> hwsim precision."""
_BYTES = {"c10::BFloat16": 2, "c10::Half": 2, "float": 4, "double": 8, "c10::Float8_e4m3fn": 1,
          "c10::Float8_e5m2": 1, "long int": 8, "int": 4, "bool": 1, "unsigned char": 1}
MIN_MEMORY_BYTES = 2 ** 20
"""Memory-bound kernels below this many bytes are launch-bound, not bandwidth-bound: not fitted."""
_LAUNCH = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
           "hipLaunchKernel")


def kernel_class(name: str) -> str:
    """``nccl``, ``attention``, ``gemm`` or ``memory`` (see the module doc)."""
    if _NCCL.search(name):
        return "nccl"
    if _ATTN.search(name):
        return "attention"
    if _GEMM.search(name):
        return "gemm"
    return "memory"


@dataclass
class Kernel:
    """A GPU kernel: name, class, start and duration (s), stream, and what its launching op
    tells: FLOPs, bytes (estimated from shapes), precision."""

    name: str
    cls: str
    start_s: float
    dur_s: float
    stream: Any
    flops: float | None = None
    nbytes: float | None = None
    dtype: str | None = None
    shape: tuple | None = None


@dataclass
class Trace:
    """A parsed trace: its kernels, the host's launch intervals (s), and the GPU's name."""

    file: str
    kernels: list[Kernel]
    launch_intervals_s: list[float]
    gpu_name: str | None


def read_trace(path: str | Path) -> Trace:
    p = Path(path)
    if not p.is_file():
        raise ScenarioError("no such profiler trace (a Chrome-trace JSON written by "
                            "torch.profiler's export_chrome_trace)", file=str(p))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ScenarioError(f"not valid JSON ({err}); a Kineto trace is the JSON that "
                            "torch.profiler's export_chrome_trace writes", file=str(p)) from None
    return parse_trace(data, file=str(p))


def _dims_bytes(dims: Any, types: Any) -> tuple[list[int], float] | None:
    if not isinstance(dims, list) or not isinstance(types, list):
        return None
    sizes, total = [], 0.0
    for d, t in zip(dims, types):
        if isinstance(d, list) and d and all(isinstance(x, int) for x in d) and t in _BYTES:
            n = 1
            for x in d:
                n *= x
            sizes.append(n * _BYTES[t])
            total += n * _BYTES[t]
    return (sizes, total) if sizes else None


def gemm_shape(name: str, dims: Any) -> tuple | None:
    """The kernel shape ``("gemm", M, N, K[, batch])`` (:mod:`hwsim.catalog.kernels`) of an
    ATen matmul op from its ``Input Dims``, or None when they do not give one."""
    try:
        if name in ("aten::mm", "aten::matmul") and len(dims[0]) == 2 == len(dims[1]):
            (m, k), (_, n) = dims[0], dims[1]
            return ("gemm", m, n, k)
        if name == "aten::addmm":
            (m, k), (_, n) = dims[1], dims[2]
            return ("gemm", m, n, k)
        if name in ("aten::bmm", "aten::baddbmm"):
            a, b = (dims[0], dims[1]) if name == "aten::bmm" else (dims[1], dims[2])
            return ("gemm", a[1], b[2], a[2], a[0])
        if name in ("aten::linear", "aten::matmul"):
            x, w = dims[0], dims[1]
            rows = 1
            for v in x[:-1]:
                rows *= v
            return ("gemm", rows, w[0] if name == "aten::linear" else w[-1], x[-1])
    except (IndexError, TypeError, ValueError):
        return None
    return None


def _gemm_flops(name: str, dims: Any) -> float | None:
    """2MNK (times the batch) from the input shapes of an ATen matmul op."""
    shape = gemm_shape(name, dims)
    if shape is None:
        return None
    batch = shape[4] if len(shape) > 4 else 1
    return 2.0 * shape[1] * shape[2] * shape[3] * batch


def parse_trace(data: Any, file: str = "<trace>") -> Trace:
    """Parse a Kineto trace mapping (see the module doc)."""
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise ScenarioError("no traceEvents list: a Kineto trace is {\"traceEvents\": [...]} as "
                            "torch.profiler's export_chrome_trace writes it", file=file)
    ops: dict[Any, dict] = {}
    launches: dict[Any, list[float]] = {}
    raw = []
    for e in events:
        if not isinstance(e, dict) or e.get("ph") != "X":
            continue
        cat, args = e.get("cat"), e.get("args") or {}
        if cat == "cpu_op" and "External id" in args:
            ops.setdefault(args["External id"], e)
        elif cat == "cuda_runtime" and e.get("name") in _LAUNCH:
            launches.setdefault((e.get("pid"), e.get("tid")), []).append(float(e.get("ts", 0)))
        elif cat == "kernel":
            raw.append(e)
    if not raw:
        raise ScenarioError("the trace has no GPU kernels (no events with \"cat\": \"kernel\"); "
                            "valid: a trace of a training step profiled with "
                            "activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]", file=file)
    kernels = []
    for e in raw:
        args = e.get("args") or {}
        k = Kernel(e.get("name", ""), kernel_class(e.get("name", "")), float(e["ts"]) * 1e-6,
                   float(e["dur"]) * 1e-6, args.get("stream", e.get("tid")))
        op = ops.get(args.get("External id"))
        if op is not None:
            oa = op.get("args") or {}
            dims, types = oa.get("Input Dims"), oa.get("Input type")
            k.dtype = next((DTYPE_OF[t] for t in types or [] if t in DTYPE_OF), None) \
                if isinstance(types, list) else None
            if k.cls == "gemm":
                shape = gemm_shape(op["name"], dims)
                k.shape = shape if shape is not None and all(
                    isinstance(x, int) and x > 0 for x in shape[1:]) else None
                k.flops = float(oa["flops"]) if oa.get("flops") else _gemm_flops(op["name"], dims)
            elif k.cls == "memory":
                got = _dims_bytes(dims, types)
                if got is not None:
                    k.nbytes = got[1] + max(got[0])
        kernels.append(k)
    kernels.sort(key=lambda k: k.start_s)
    intervals = []
    for ts in launches.values():
        ts.sort()
        intervals += [(b - a) * 1e-6 for a, b in zip(ts, ts[1:]) if 0 < b - a <= 1000]
    if not intervals:  # GPU side: the start-to-start interval where the GPU waited
        by_stream: dict[Any, list[Kernel]] = {}
        for k in kernels:
            by_stream.setdefault(k.stream, []).append(k)
        for ks in by_stream.values():
            intervals += [b.start_s - a.start_s for a, b in zip(ks, ks[1:])
                          if b.start_s > a.start_s + a.dur_s and b.start_s - a.start_s <= 1e-3]
    props = data.get("deviceProperties") if isinstance(data, dict) else None
    name = props[0].get("name") if isinstance(props, list) and props and isinstance(
        props[0], dict) else None
    return Trace(file, kernels, intervals, name)


def model_time(spec: DeviceSpec, k: Kernel, default_dtype: str) -> float:
    """The model's device time of kernel *k* on *spec* (no launch floor): a GEMM with a shape by
    the kernel model (where *spec* has one), else by the FLOP ramp; a memory-bound kernel its
    bytes at the measured bandwidth. *spec* as given: a catalog device carries no software-stack
    factor (:meth:`hwsim.catalog.stacks.StackProfile.apply` adds one)."""
    shape = k.shape if k.cls == "gemm" and k.shape and spec.kernels is not None else ()
    t_c, t_m = spec.roofline_s(k.flops or 0.0, k.nbytes or 0.0, k.dtype or default_dtype,
                               shape=shape)
    return t_c if k.cls == "gemm" else t_m


def fittable(trace: Trace, cls: str) -> list[Kernel]:
    """Kernels of class *cls* the model can time: GEMMs with FLOPs, memory-bound kernels of at
    least :data:`MIN_MEMORY_BYTES`."""
    if cls == "gemm":
        return [k for k in trace.kernels if k.cls == "gemm" and k.flops]
    return [k for k in trace.kernels if k.cls == "memory" and (k.nbytes or 0) >= MIN_MEMORY_BYTES]


def launch_overhead(trace: Trace) -> float | None:
    """The median host launch interval (s), or None without any (see the module doc)."""
    return statistics.median(trace.launch_intervals_s) if trace.launch_intervals_s else None
