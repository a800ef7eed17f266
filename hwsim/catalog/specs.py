"""Hardware specifications: frozen dataclasses in SI units, each figure with its source.

Specs answer "how long" questions as pure functions (``DeviceSpec.op_time_s``); they know nothing
of simulation. They are built from the YAML files in ``hwsim/catalog/data/`` by
:mod:`hwsim.catalog.loader`, which converts human units to SI once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from hwsim.catalog.kernels import KernelSpec, check_shape

__all__ = ["DeviceSpec", "LinkSpec", "StorageSpec", "DTYPES", "DEVICE_KINDS", "LINK_CLASSES",
           "STORAGE_KINDS"]

DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "fp6", "fp4", "int8")
"""Precisions a device may list a dense peak for. ``fp4``/``fp6``: the block-scaled 4- and 6-bit
formats (NVFP4, MXFP4, MXFP6) of Blackwell Tensor Cores and CDNA 4 Matrix Cores."""
_FALLBACK = {
    "fp4": ("fp4",),
    "fp6": ("fp6",),
    "fp8": ("fp8", "bf16", "fp16", "fp32"),
    "int8": ("int8", "fp8", "bf16", "fp16", "fp32"),
    "bf16": ("bf16", "fp16", "tf32", "fp32"),
    "fp16": ("fp16", "bf16", "tf32", "fp32"),
    "tf32": ("tf32", "fp32"),
    "fp32": ("fp32",),
    "fp64": ("fp64", "fp32"),
}
"""Precisions a device's peak falls back to, in order (:meth:`DeviceSpec.peak`). fp4 and fp6 fall
back to nothing: a device without 4-/6-bit matrix units does not run them (an emulation through
fp8 would be a software choice, not this device's peak)."""
DEVICE_KINDS = ("gpu", "tpu", "cpu")
LINK_CLASSES = ("nvlink", "pcie", "infiniband", "ethernet", "omnipath", "ici", "wan", "xgmi")
STORAGE_KINDS = ("dram", "nvme", "ssd", "hdd", "parallel-fs", "object")


@dataclass(frozen=True)
class DeviceSpec:
    """A compute device (GPU, TPU or CPU socket).

    ``peak_flops_per_s`` maps a precision of :data:`DTYPES` to the dense (no sparsity) peak.
    ``compute_efficiency`` is the best fraction of peak a large matrix multiply achieves (measured);
    ``compute_ramp_flops`` is the op size at which an op reaches half of that: the efficiency of an
    op of ``f`` FLOPs is ``compute_efficiency * f / (f + compute_ramp_flops)`` (small GEMMs do not
    fill the device). ``memory_efficiency`` is the achievable fraction of ``mem_bw_bytes_per_s``
    (STREAM copy over datasheet). These describe one kernel run alone, as a benchmark runs it
    (:meth:`efficiency`).

    Inside a training framework kernels reach less (:meth:`framework_efficiency`,
    :meth:`roofline_s`): ``framework_compute_factor`` scales the compute efficiency of ops at a
    matrix-unit precision (one whose peak exceeds the device's fp32 peak: Tensor Cores, MXUs;
    real layer shapes instead of the best one, transposed operands in backward, sustained clocks),
    ``framework_memory_factor`` the bandwidth of memory-bound ops (framework elementwise,
    normalisation and reduction kernels against a STREAM copy). Both are calibrated against
    published training runs (``sources`` says which); None (a factor of 1) where a device has
    none.

    CPUs: ``cores`` per socket and ``threads``, hardware threads per socket (SMT; None = one per
    core); a server's data-loader workers share its sockets' hardware threads
    (:meth:`hwsim.jobs.system.System.cores`).

    ``idle_power_w`` and ``peak_power_w`` (TDP) are the board's power at idle and its limit;
    ``busy_power_w`` its measured draw while it computes flat out (None: not in the catalog, then
    :attr:`busy_w` is the TDP, an upper bound).

    ``launch_overhead_s`` is the host's time to dispatch one op
    (kernel launch and framework dispatch); see :meth:`op_time_s`. ``sources`` maps a field name to where its figure comes from.

    ``host_link`` is the catalog link id (a ``pcie*`` link) of the device's host interface, the
    PCIe generation its datasheet states (a CPU socket's: its PCIe lanes' generation). A server
    whose scenario sets no ``host_link`` uses its accelerator's, else its CPU's
    (:func:`hwsim.topology.builders.default_host_link`). None where no datasheet states one.
    ``kernels`` (GPUs with an entry in ``data/kernels.yaml``): the kernel model
    (:mod:`hwsim.catalog.kernels`). An op that carries its kernel shape (``shape``, e.g.
    ``("gemm", M, N, K)``) is then timed from it, tile and wave quantised over the SMs at the
    large-GEMM ceiling ``compute_efficiency x peak`` (or its flash-attention kernel's ceiling),
    instead of by the FLOP ramp ``compute_ramp_flops``; an op without a shape, or a device
    without a kernel entry, keeps the FLOP ramp.
    """

    id: str
    kind: str
    name: str
    peak_flops_per_s: Mapping[str, float]
    memory_bytes: float
    mem_bw_bytes_per_s: float
    compute_efficiency: float
    compute_ramp_flops: float
    memory_efficiency: float
    launch_overhead_s: float
    idle_power_w: float
    peak_power_w: float
    cores: int | None = None
    threads: int | None = None
    framework_compute_factor: float | None = None
    framework_memory_factor: float | None = None
    price_usd: float | None = None
    price_usd_per_hour: float | None = None
    price_date: str | None = None
    host_link: str | None = None
    fp8_any_layout: bool | None = None
    """True: the device's FP8 GEMMs take operands in any layout (Blackwell: cuBLAS non-TN FP8),
    so a per-tensor-scaled FP8 tensor needs no transposed copy (Transformer Engine keeps none
    there); None (not listed): TN only (Hopper, Ada), the transpose is cast and kept as well."""
    busy_power_w: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    kernels: KernelSpec | None = None
    gemm_ceiling: Mapping[str, float] | None = None

    def ceiling(self, dtype: str) -> float:
        """The large-GEMM ceiling of the FLOP ramp at *dtype*: the precision's own measured
        ceiling where the device entry lists one (``gemm_ceiling``: FP8 on CDNA), else
        ``compute_efficiency`` (measured at bf16). The kernel model keeps its own per-precision
        ceilings (``kernels.gemm_ceiling``, FP8 on Hopper)."""
        if self.gemm_ceiling is not None and dtype in self.gemm_ceiling:
            return self.gemm_ceiling[dtype]
        return self.compute_efficiency

    @property
    def busy_w(self) -> float:
        """Power (W) while computing flat out: ``busy_power_w``, else ``peak_power_w``."""
        return float(self.busy_power_w if self.busy_power_w is not None else self.peak_power_w)

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s at *dtype*; falls back to the nearest wider precision the device lists.

        fp8 falls back to fp16/bf16, bf16 and fp16 to each other then tf32 then fp32, tf32 to fp32;
        fp4 and fp6 to nothing (ValueError naming the device: it has no such units).
        """
        chain = _FALLBACK.get(dtype)
        if chain is None:
            raise ValueError(f"unknown precision {dtype!r}; valid: {', '.join(DTYPES)}")
        for d in chain:
            if d in self.peak_flops_per_s:
                return self.peak_flops_per_s[d]
        if dtype in ("fp4", "fp6"):
            raise ValueError(f"device {self.id} has no {dtype} matrix units (it lists no {dtype} "
                             f"peak); devices with them list {dtype} in `hwsim catalog devices`")
        raise ValueError(f"device {self.id} lists no peak for {dtype!r} or a wider precision")

    def efficiency(self, flops: float, dtype: str = "bf16") -> float:
        """Achieved fraction of peak for one op of *flops* FLOPs at *dtype*, run alone (as a GEMM
        benchmark runs it).

        ``compute_ramp_flops`` is stated at the bf16 peak; at another precision it scales with
        that precision's peak, so the ramp is the same length of time (a slower precision fills
        the device with proportionally less work).
        """
        if flops <= 0:
            return self.ceiling(dtype)
        ramp = self.compute_ramp_flops * self.peak(dtype) / self.peak("bf16")
        return self.ceiling(dtype) * flops / (flops + ramp)

    def matrix_unit(self, dtype: str) -> bool:
        """Whether *dtype* runs on the device's matrix units: its peak exceeds the fp32 peak
        (Tensor Core tf32/fp16/bf16/fp8; fp32 itself runs on the vector units)."""
        return "fp32" in self.peak_flops_per_s and self.peak(dtype) > self.peak("fp32")

    def framework_factor(self, dtype: str) -> float:
        """``framework_compute_factor`` at a matrix-unit precision, else (or when unset) 1."""
        if self.framework_compute_factor is None or not self.matrix_unit(dtype):
            return 1.0
        return self.framework_compute_factor

    def framework_efficiency(self, flops: float, dtype: str = "bf16") -> float:
        """Fraction of peak one op of *flops* FLOPs at *dtype* reaches inside a framework:
        ``ceiling * flops / (flops / framework_factor + ramp)``, the framework's loss on the
        useful work and the small-op ramp of :meth:`efficiency` (a fixed cost, as the op run
        alone pays it) not scaled. Never decreases with *flops*; tends to
        ``compute_efficiency * framework_factor(dtype)``."""
        f = self.framework_factor(dtype)
        if flops <= 0 or f == 1.0:
            return self.efficiency(flops, dtype) * f
        ramp = self.compute_ramp_flops * self.peak(dtype) / self.peak("bf16")
        return self.ceiling(dtype) * flops / (flops / f + ramp)

    def framework_bandwidth(self) -> float:
        """Bytes/s a memory-bound op reaches inside a framework: datasheet bandwidth x
        ``memory_efficiency`` x ``framework_memory_factor``."""
        factor = 1.0 if self.framework_memory_factor is None else self.framework_memory_factor
        return self.mem_bw_bytes_per_s * self.memory_efficiency * factor

    def roofline_s(self, flops: float, bytes_moved: float, dtype: str,
                   shape: Sequence = ()) -> tuple[float, float]:
        """Device time of one op as (compute time, memory time), inside a framework.

        With a kernel *shape* on a device with a kernel model, the compute time is the kernel
        model's (quantised tiles at the ceiling, plus the kernel's fixed latency) plus the
        framework's loss on the useful work: its FLOPs at the ceiling times ``1 /
        framework_factor - 1`` (a framework's kernels lose in proportion to the work they do;
        the tiles' padding of a skinny GEMM and the fixed latency are the kernel model's own,
        not scaled); else the FLOP ramp's."""
        t_m = bytes_moved / self.framework_bandwidth() if bytes_moved > 0 else 0.0
        if shape and self.kernels is not None and flops > 0:
            check_shape(shape)
            # the kernel model applies its own per-precision ceilings (kernels.yaml gemm_ceiling)
            peak, ceiling = self.peak(dtype), self.ceiling(dtype)
            t_k = self.kernels.compute_s(shape, flops, peak, ceiling, dtype)
            f = self.framework_factor(dtype)
            if f != 1.0:
                t_k += self.kernels.work_s(shape, flops, peak, ceiling, dtype) * (1.0 / f - 1.0)
            return t_k, t_m
        t_c = (flops / (self.peak(dtype) * self.framework_efficiency(flops, dtype))
               if flops > 0 else 0.0)
        return t_c, t_m

    def op_time_s(self, flops: float, bytes_moved: float, dtype: str, speed: float = 1.0,
                  shape: Sequence = ()) -> float:
        """Time of one op: ``max(compute, memory) / speed``, but never less than
        ``launch_overhead_s``.

        The host dispatches ops asynchronously: while the device runs one op, the host launches
        the next, so a stream of ops advances at the slower of the two. Tiny ops therefore cost
        the dispatch time, large ones their roofline time. *speed* scales the device (a
        straggler has ``speed < 1``). *shape*: the op's kernel shape (:meth:`roofline_s`).
        """
        return self.op_cost(flops, bytes_moved, dtype, speed, shape)[0]

    def op_bound(self, flops: float, bytes_moved: float, dtype: str, speed: float = 1.0,
                 shape: Sequence = ()) -> str:
        """What limits the op: ``"compute"``, ``"memory"`` or ``"overhead"``.

        ``"overhead"`` when the fixed costs (host dispatch, and the ramp time of an op too small
        to fill the device: its compute time beyond the time at the plateau efficiency; with a
        kernel shape, its quantisation waste and fixed latency) exceed both the useful compute
        time and the memory time, i.e. for ops below half of the achievable efficiency and ops
        shorter than the dispatch time.
        """
        return self.op_cost(flops, bytes_moved, dtype, speed, shape)[1]

    def op_cost(self, flops: float, bytes_moved: float, dtype: str, speed: float = 1.0,
                shape: Sequence = ()) -> tuple[float, str]:
        """``(op_time_s, op_bound)`` of one op, from one roofline."""
        t_c, t_m = self.roofline_s(flops, bytes_moved, dtype, shape)
        time = max(max(t_c, t_m) / speed, self.launch_overhead_s)
        plateau = self.ceiling(dtype) * self.framework_factor(dtype)
        t_useful = flops / (self.peak(dtype) * plateau) if flops > 0 else 0.0
        t_useful = min(t_useful, t_c)
        if max(t_useful, t_m) / speed < max((t_c - t_useful) / speed, self.launch_overhead_s):
            return time, "overhead"
        return time, "compute" if t_c >= t_m else "memory"


@dataclass(frozen=True)
class LinkSpec:
    """A link technology. ``bw_bytes_per_s`` is per direction for one port/link of this kind as a
    device attaches it (e.g. nvlink3: one A100's total NVLink bandwidth to the switch, per
    direction). ``efficiency`` is the achievable fraction of it for bulk transfers (measured).
    ``latency_s`` is the one-way latency of one hop."""

    id: str
    link_class: str
    name: str
    bw_bytes_per_s: float
    latency_s: float
    efficiency: float
    power_w: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def effective_bw_bytes_per_s(self) -> float:
        return self.bw_bytes_per_s * self.efficiency


@dataclass(frozen=True)
class StorageSpec:
    """A storage or memory tier. Bandwidths and IOPS are for one device/volume of the tier; reads and
    writes each have their own channel. ``latency_s`` is the access latency of one request."""

    id: str
    kind: str
    name: str
    read_bw_bytes_per_s: float
    write_bw_bytes_per_s: float
    read_iops: float
    write_iops: float
    latency_s: float
    capacity_bytes: float
    client_bw_bytes_per_s: float | None = None
    """A shared tier's throughput to or from one client server (all its processes together),
    None where only the path and the tier limit it."""
    idle_power_w: float | None = None
    active_power_w: float | None = None
    price_usd: float | None = None
    price_usd_per_hour: float | None = None
    price_date: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    def effective_read_bw(self, request_bytes: float) -> float:
        """Read bandwidth for requests of *request_bytes*: ``min(bw, iops * request_bytes)``."""
        return min(self.read_bw_bytes_per_s, self.read_iops * max(request_bytes, 1.0))

    def effective_write_bw(self, request_bytes: float) -> float:
        return min(self.write_bw_bytes_per_s, self.write_iops * max(request_bytes, 1.0))
