"""nccl-tests all_reduce_perf (and all_gather, reduce_scatter) simulated on the published systems
and compared with calibration.yaml: every row >= 16 MiB that no constant was fitted to must be
within 15%; smaller messages are reported only.

``python tests/test_nccl_calibration.py`` prints the table (:func:`nccl_report`); ``pytest -s``
prints it too. :func:`fit_constants` refits :class:`hwsim.jobs.nccl.Params` to the rows of
:data:`hwsim.jobs.nccl.FITTED_TO`; a test checks the stored constants are that fit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd
import pytest
import simpy

from hwsim.engine import Recorder
from hwsim.jobs.collectives import choose, collective
from hwsim.jobs.nccl import CATALOG_ROWS, FITTED_TO, PARAMS, Params, busbw_factor
from hwsim.jobs.system import System
from hwsim.topology import cluster, nodes_of_kind

MiB, GiB = 2**20, 2**30


def _node(gpu: str, link: str, **more: Any) -> dict:
    return dict(gpu=gpu, gpus_per_node=8, intra_node=link, host_link="pcie5-x16", **more)


_B200 = _node("B200", "nvlink5", nic="ib-ndr-400", nics_per_node=8)
_AZ = "github.com/Azure/AI-benchmarking-guide (nccl-tests all_reduce_perf, in-place)"
_ML = "github.com/stas00/ml-engineering"
_RCCL = ("AMD ROCm blog 'Understanding RCCL Bandwidth and xGMI Performance on AMD Instinct "
         "MI300X' (2025-03-02; github.com/ROCm/rocm-blogs blogs/software-tools-optimization/"
         "mi300x-rccl-xgmi/README.md): rccl-tests all_reduce_perf, 8x MI300X, RCCL 2.22.3, "
         "out-of-place busbw")
CASES: dict[str, dict[str, Any]] = {
    "A100 8x nvlink3": dict(nodes=1, node=dict(_node("A100-SXM4-80GB", "nvlink3"),
                                               host_link="pcie4-x16"),
                            op="allreduce", algorithm="auto", source=_AZ,
                            busbw={1e3: 0.04, MiB: 36.22, 16 * MiB: 109.22, 128 * MiB: 174.18,
                                   GiB: 228.10, 8 * GiB: 231.58}),
    "H100 8x nvls": dict(nodes=1, node=_node("H100-SXM5-80GB", "nvlink4"), op="allreduce",
                         algorithm="auto", source=_AZ,
                         busbw={1e3: 0.07, MiB: 43.70, 16 * MiB: 234.45, 128 * MiB: 400.61,
                                GiB: 466.35, 8 * GiB: 478.87}),
    "H200 8x nvls": dict(nodes=1, node=_node("H200-SXM-141GB", "nvlink4"), op="allreduce",
                         algorithm="nvls", source=_ML + " all-reduce-8xH200.md (NCCL 2.27.7)",
                         busbw={16 * GiB: 480.0}),
    "H200 8x ring": dict(nodes=1, node=_node("H200-SXM-141GB", "nvlink4"), op="allreduce",
                         algorithm="ring", source=_ML + " all-reduce-8xH200.md (NCCL 2.27.7)",
                         busbw={16 * GiB: 367.2}),
    "H200 8x allgather ring": dict(nodes=1, node=_node("H200-SXM-141GB", "nvlink4"),
                                   op="allgather", algorithm="ring", source=_ML + " (8xH200)",
                                   busbw={16 * GiB: 361.4}),
    "H200 8x reducescatter ring": dict(nodes=1, node=_node("H200-SXM-141GB", "nvlink4"),
                                       op="reduce_scatter", algorithm="ring",
                                       source=_ML + " (8xH200)", busbw={16 * GiB: 362.9}),
    "B200 1 node": dict(nodes=1, node=_B200, op="allreduce", algorithm="auto",
                        source=_ML + " network/README.md (8x B200, 8x 400 Gb/s EFA per node)",
                        busbw={MiB: 36.06, 16 * MiB: 254.96, 128 * MiB: 568.38, GiB: 723.34,
                               4 * GiB: 740.64, 16 * GiB: 845.67}),
    "B200 4 nodes": dict(nodes=4, node=_B200, op="allreduce", algorithm="auto",
                         source=_ML + " network/README.md (EFA; modelled as ib-ndr-400)",
                         busbw={MiB: 5.37, 16 * MiB: 64.43, 128 * MiB: 197.94, GiB: 361.99,
                                4 * GiB: 377.34, 16 * GiB: 381.80}),
    "MI300X 8x xgmi": dict(nodes=1, node=_node("MI300X", "xgmi-mi300x"), op="allreduce",
                           algorithm="auto", source=_RCCL,
                           busbw={1024: 0.14, MiB: 66.93, 16 * MiB: 197.26, 128 * MiB: 294.55,
                                  GiB: 314.72, 16 * GiB: 318.98}),
}
"""nccl-tests figures of ``calibration.yaml`` (keys nccl_allreduce_busbw_gb_per_s_8gpu_one_node,
nccl_8xh200_ring_vs_nvls, multi_node_allreduce_b200), and the rccl-tests rows of an 8x MI300X
Infinity Fabric mesh (``_RCCL``), GB/s by message size in bytes, and the ``cluster`` each is
simulated on."""


def predict(case: str, size: float, params: Params | None = None) -> tuple[float, str]:
    """Simulated nccl-tests bus bandwidth (GB/s) of *case* at *size* bytes, and the
    ``algorithm/protocol`` used: one collective alone on the case's cluster."""
    c = CASES[case]
    graph = cluster(nodes=c["nodes"], node=c["node"])
    env = simpy.Environment()
    system = System(env, graph, Recorder())
    devices = nodes_of_kind(graph, "gpu")
    p = params or PARAMS
    alg, proto = choose(system, devices, c["op"], size, algorithm=c["algorithm"], params=p)
    env.process(collective(system, c["op"], devices, size, algorithm=alg, protocol=proto,
                           params=p))
    env.run()
    return size / env.now * busbw_factor(c["op"], len(devices)) / 1e9, f"{alg}/{proto}"


def _role(case: str, size: float) -> str:
    if any((case, size) in rows for rows in FITTED_TO.values()):
        return "fitted"
    if (case, size) in CATALOG_ROWS:
        return "catalog"
    return "validated" if size >= 16 * MiB else "reported"


def nccl_report(params: Params | None = None) -> pd.DataFrame:
    """Every calibration row: case, size, published and predicted bus bandwidth (GB/s), relative
    error, algorithm used, and role: ``fitted`` (a :class:`Params` constant was fitted to it),
    ``catalog`` (a links.yaml efficiency was derived from it), ``validated`` (>= 16 MiB, neither:
    must be within 15%) or ``reported`` (< 16 MiB, error shown, no target)."""
    rows = []
    for case, c in CASES.items():
        for size, published in c["busbw"].items():
            pred, used = predict(case, size, params)
            rows.append(dict(case=case, size_bytes=int(size), published_gb_s=published,
                             predicted_gb_s=round(pred, 2), error=round(pred / published - 1, 4),
                             algorithm=used, role=_role(case, size)))
    return pd.DataFrame(rows)


def _golden(fn, lo: float, hi: float, iters: int = 40) -> float:
    g = (5 ** 0.5 - 1) / 2
    a, b = lo + (1 - g) * (hi - lo), lo + g * (hi - lo)
    fa, fb = fn(a), fn(b)
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - g) * (hi - lo)
            fa = fn(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = fn(b)
    return (lo + hi) / 2


def _solve(fn, target: float, lo: float, hi: float, iters: int = 40) -> float:
    """x in [lo, hi] with fn(x) = target, fn monotone."""
    up = fn(hi) > fn(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if (fn(mid) < target) == up:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fit_constants(params: Params | None = None) -> Params:
    """Refit :class:`Params` to the rows of :data:`FITTED_TO`, in order: the slice (least squares
    of relative error over its rows), the network step latency (exact on its row, given the
    slice), RCCL's slice (exact on its MI300X row), then NVLS efficiency and latency (exact on
    their two rows, alternating)."""
    p = params or PARAMS

    def err(case: str, size: float, q: Params) -> float:
        return predict(case, size, q)[0] / CASES[case]["busbw"][size] - 1

    p = replace(p, slice_bytes=_golden(lambda f: sum(
        err(c, s, replace(p, slice_bytes=f)) ** 2 for c, s in FITTED_TO["slice_bytes"]),
        0.2e6, 20e6))
    (c, s), = FITTED_TO["net_step_latency_s"]
    p = replace(p, net_step_latency_s=_solve(
        lambda x: err(c, s, replace(p, net_step_latency_s=x)), 0.0, 0.0, 200e-6, 30))
    (c, s), = FITTED_TO["rccl_slice_bytes"]
    p = replace(p, rccl_slice_bytes=_solve(
        lambda x: err(c, s, replace(p, rccl_slice_bytes=x)), 0.0, 0.2e6, 8e6, 30))
    (ce, se), = FITTED_TO["nvls_efficiency"]
    (cl, sl), = FITTED_TO["nvls_latency_s"]
    for _ in range(3):
        p = replace(p, nvls_efficiency=_solve(
            lambda x: err(ce, se, replace(p, nvls_efficiency=x)), 0.0, 0.3, 1.0, 30))
        p = replace(p, nvls_latency_s=_solve(
            lambda x: err(cl, sl, replace(p, nvls_latency_s=x)), 0.0, 0.0, 500e-6, 30))
    return p


@pytest.fixture(scope="module")
def report() -> pd.DataFrame:
    df = nccl_report()
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print("\n" + df.to_string(index=False))
    return df


def test_every_validation_row_is_within_15_percent(report):
    val = report[report.role == "validated"]
    assert len(val) >= 12
    bad = val[val.error.abs() > 0.15]
    assert bad.empty, bad.to_string()


def test_fitted_and_catalog_rows_are_within_15_percent_too(report):
    big = report[report.size_bytes >= 16 * MiB]
    assert (big.error.abs() <= 0.15).all(), big.to_string()


def test_auto_picks_what_nccl_ran(report):
    """NVLS on H100 from 16 MiB, ring on A100 and B200, ring across the 4 B200 nodes from 16 MiB."""
    big = report[report.size_bytes >= 16 * MiB].set_index(["case", "size_bytes"]).algorithm
    assert set(big[["H100 8x nvls"]]) == {"nvls/nvls"}
    for case in ("A100 8x nvlink3", "B200 1 node", "B200 4 nodes"):
        assert set(big[[case]]) == {"ring/simple"}


def test_four_nodes_are_slower_than_one_at_every_size():
    for size in (MiB, 16 * MiB, GiB):
        assert predict("B200 4 nodes", size)[0] < predict("B200 1 node", size)[0]


def test_stored_constants_are_the_fit():
    fit = fit_constants()
    for name in FITTED_TO:
        assert getattr(fit, name) == pytest.approx(getattr(PARAMS, name), rel=0.02), name


if __name__ == "__main__":
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(nccl_report().to_string(index=False))
