"""Input pipelines (hwsim/jobs/inputs.py): loader workers on the server's shared hardware threads,
prefetch, the page cache, record files, the dataloader (DLIO) workload and its validation."""

from __future__ import annotations

import math

import pytest

import hwsim
from hwsim.jobs.system import PageCache
from hwsim.scenario import load_scenario
from report_checks import load_benchmark

B = 256           # samples per batch (one GPU)


def _train(data: dict, *, precision: str = "bf16", gpus: int = 1, steps: int | None = None,
           node: dict | None = None, **workload) -> dict:
    workers = data.get("workers", 1)
    return {"name": "inputs", "cluster": {"nodes": 1, "node": {
        "gpu": "A100-SXM4-80GB", "gpus_per_node": gpus, "cpu": "EPYC-7742",
        "intra_node": "nvlink3", "local_storage": "nvme-gen4", **(node or {})}},
        "workload": {"kind": "training", "model": {"preset": "resnet50"}, "precision": precision,
                     "global_batch": B * gpus, "optimizer": "sgd",
                     "steps": steps or 4 * workers + 1, "data": data, **workload},
        "outputs": {"events": True, "utilization": False, "trace": False}}


def _memory_data(decode_s: float, workers: int) -> dict:
    return {"storage": "memory", "samples": 1281167, "sample_bytes": 110e3, "workers": workers,
            "decode_s_per_sample": decode_s}


@pytest.fixture(scope="module")
def gpu_step_s() -> float:
    """Step time of the GPU alone (no decode cost) for one A100, ResNet-50 bf16, batch 256."""
    return hwsim.run(_train(_memory_data(0.0, 1), steps=3)).summary["step_time_s"]


def test_decode_bound_step_is_batch_decode_time_over_workers():
    d, w = 5e-3, 4
    s = hwsim.run(_train(_memory_data(d, w))).summary
    # workers deliver w batches every B*d seconds: the mean step is B*d/w exactly
    assert s["step_time_s"] == pytest.approx(B * d / w, rel=1e-9)
    assert s["bottleneck"] == "host"


def test_cpu_bound_and_gpu_bound_flip_where_the_numbers_say(gpu_step_s):
    w = 4
    flip = w * gpu_step_s / B          # decode time per sample at which input = GPU rate
    below = hwsim.run(_train(_memory_data(0.8 * flip, w))).summary
    above = hwsim.run(_train(_memory_data(1.25 * flip, w))).summary
    assert below["bottleneck"] in ("compute", "memory")
    assert below["step_time_s"] == pytest.approx(gpu_step_s, rel=0.02)
    assert above["step_time_s"] == pytest.approx(B * 1.25 * flip / w, rel=1e-6)
    # the step waits for its batch 1 - 1/1.25 = 20 % of the time: charged to host, the GPU's
    # busy 80 % stays compute (the bottleneck is the largest share, DESIGN.md)
    r = hwsim.run(_train(_memory_data(1.25 * flip, w)))
    host = r.bottleneck.set_index("category")["share"].get("host", 0.0)
    assert host == pytest.approx(0.2, abs=0.01)
    assert r.summary["input_wait_share"] == pytest.approx(0.2, abs=0.01)
    assert below["input_wait_share"] < 0.01
    slow = hwsim.run(_train(_memory_data(2.5 * flip, w))).summary   # GPU waits 60 %
    assert slow["bottleneck"] == "host" and slow["bottleneck_share"] == pytest.approx(0.6, abs=0.01)
    # the same pipeline: a slower precision makes the GPU the bottleneck again
    tf32 = hwsim.run(_train(_memory_data(2.5 * flip, w), precision="tf32")).summary
    assert tf32["bottleneck"] in ("compute", "memory")
    assert tf32["step_time_s"] > B * 2.5 * flip / w        # tf32 compute outlasts the input


def test_workers_of_a_server_share_its_hardware_threads():
    # 8 GPUs x 8 workers = 64 workers on one 40-thread Xeon E5-2698 v4 socket: the server decodes
    # 40 batches at a time, so a rank's step is 8 * B * d / 40, not B * d / 8 (a logistic regression keeps
    # the GPUs far faster than the input; many steps make the start-up negligible)
    d = 5e-3
    sc = _train(_memory_data(d, 8), gpus=8, steps=321,
                node={"cpu": "Xeon-E5-2698v4", "cpu_sockets": 1})
    sc["workload"].update(model={"preset": "logistic-regression"}, loss="bce")
    s = hwsim.run(sc).summary
    assert s["step_time_s"] == pytest.approx(8 * B * d / 40, rel=0.03)
    assert s["bottleneck"] == "host"
    sc["cluster"]["node"]["cpu_sockets"] = 2      # 80 threads >= 64 workers: no sharing
    s2 = hwsim.run(sc).summary
    assert s2["step_time_s"] == pytest.approx(B * d / 8, rel=0.02)


def _hdd_epochs(page_cache: bool):
    batch, per_epoch = 64, 5
    return hwsim.run({
        "name": "page-cache", "cluster": {"node": {
            "gpu": "A100-SXM4-80GB", "gpus_per_node": 1, "local_storage": "hdd-7200"}},
        "workload": {"kind": "training", "model": {"preset": "logistic-regression"},
                     "global_batch": batch, "loss": "bce", "epochs": 2,
                     "data": {"storage": "local", "samples": batch * per_epoch,
                              "sample_bytes": 4096, "page_cache": page_cache}},
        "outputs": {"events": True, "utilization": False, "trace": False}})


def test_second_epoch_that_fits_in_page_cache_is_faster():
    cached, uncached = _hdd_epochs(True), _hdd_epochs(False)
    reads = cached.events[cached.events["name"].str.startswith("read.step")]
    assert sorted(reads["name"]) == sorted(f"read.step{i}" for i in range(5))  # epoch 1 only
    assert reads["bytes"].sum() == pytest.approx(5 * 64 * 4096)
    h2d = cached.events[cached.events["name"].str.startswith("h2d.step")].sort_values("end_s")
    ends = h2d["end_s"].to_numpy()
    epoch1, epoch2 = ends[4] - 0.0, ends[9] - ends[4]
    assert epoch2 < epoch1 / 100                  # RAM instead of 64 random HDD reads a batch
    assert cached.summary["time_to_train_s"] < 0.55 * uncached.summary["time_to_train_s"]
    assert uncached.summary["bottleneck"] == "storage"


def test_page_cache_fills_over_epochs_and_caps_at_memory():
    one = PageCache(capacity_bytes=100.0, dataset_bytes=50.0)
    assert one.hit_fraction(0) == 0.0
    one.add(50.0)
    assert one.hit_fraction(0) == 0.0 and one.hit_fraction(1) == 1.0
    small = PageCache(capacity_bytes=20.0, dataset_bytes=80.0)   # a quarter of the data fits
    small.add(80.0)
    assert small.hit_fraction(1) == pytest.approx(0.25)
    # S servers each reading a 1/S shard per epoch: 1 - (1 - 1/S)^e cached after e epochs
    s, shared = 4, PageCache(capacity_bytes=1e9, dataset_bytes=100.0)
    for e in range(5):
        hit = shared.hit_fraction(e)
        assert hit == pytest.approx(1 - (1 - 1 / s) ** e)
        shared.add(100.0 / s * (1 - hit))


def test_record_files_are_read_whole_and_random_samples_are_iops_bound():
    base = {"storage": "local", "samples": 100000, "sample_bytes": "100 kB"}
    load = lambda d: load_scenario(_train(d)).workload.data  # noqa: E731
    assert load(base).request_bytes == 100e3
    assert load({**base, "samples_per_file": 1000}).request_bytes == 100e6
    assert load({**base, "access": "sequential"}).request_bytes == 2**20
    assert load({**base, "samples_per_file": 1000, "request_bytes": "4 MiB"}).request_bytes == 4 * 2**20
    # on an HDD, one-sample files are IOPS-bound, record files bandwidth-bound
    node = {"local_storage": "hdd-7200"}
    files = hwsim.run(_train({**base, "sample_bytes": "4 KiB"}, steps=3, node=node)).summary
    records = hwsim.run(_train({**base, "sample_bytes": "4 KiB", "samples_per_file": 1024},
                               steps=3, node=node)).summary
    assert files["bottleneck"] == "storage"
    assert files["step_time_s"] == pytest.approx(B / 170, rel=0.01)   # 170 IOPS
    assert records["bottleneck"] in ("compute", "memory")
    assert files["step_time_s"] > 10 * records["step_time_s"]


def test_bad_input_pipelines_name_the_field():
    sc = _train({"storage": "memory", "samples": 10, "sample_bytes": 10, "workers": 0})
    with pytest.raises(hwsim.ScenarioError) as err:
        load_scenario(sc, file="s.yaml")
    assert str(err.value) == ("s.yaml: workload.data.workers: input should be greater than or "
                              "equal to 1 (got 0)")
    dl = {"name": "x", "cluster": {"node": {"cpu": "EPYC-7742"}},
          "workload": {"kind": "dataloader", "accelerators": 2, "batch": 4,
                       "computation_time": 0.1,
                       "data": {"storage": "local", "samples": 10, "sample_bytes": 10}}}
    with pytest.raises(hwsim.ScenarioError) as err:
        load_scenario(dl, file="s.yaml")
    assert str(err.value) == ("s.yaml: workload.data.storage is 'local' but cluster.node has no "
                              "local_storage (e.g. local_storage: nvme-gen4)")


def test_data_on_an_object_store_across_a_wan_is_charged_to_the_wan():
    node = {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8, "cpu": "EPYC-7742",
            "intra_node": "nvlink3", "nic": "eth-100g", "nics_per_node": 1}
    sc = {"name": "wan-data", "cluster": {
        "sites": [{"name": "dc1", "nodes": 1, "node": node, "fabric": {"topology": "single-switch"}},
                  {"name": "dc2", "nodes": 1, "node": {"cpu": "EPYC-7742", "nic": "eth-100g"},
                   "fabric": {"topology": "single-switch"},
                   "storage": [{"name": "bucket", "tier": "object-store", "link": "eth-100g"}]}],
        "wan": [{"a": "dc1", "b": "dc2", "link": "wan-10g"}]},
        "workload": {"kind": "training", "model": {"preset": "mlp"}, "precision": "bf16",
                     "global_batch": 8 * B, "optimizer": "sgd", "steps": 81,
                     "data": {"storage": "dc2/bucket", "samples": 1281167,
                              "sample_bytes": "500 kB", "samples_per_file": 1000,
                              "workers": 4}},
        "outputs": {"events": True, "utilization": False, "trace": False}}
    s = hwsim.run(sc).summary
    assert s["bottleneck"] == "comm:wan"
    # 8 ranks x 256 x 500 kB a step over one 10 Gb/s link at 90 % efficiency (wan-10g)
    assert s["step_time_s"] == pytest.approx(8 * B * 500e3 / (0.9 * 10e9 / 8), rel=0.05)


# -- MLPerf Storage (DLIO) ------------------------------------------------------------------------
vs = load_benchmark("validate_storage")
_CASES = {c.id: c for c in vs.load_cases()}


@pytest.mark.parametrize("case_id", list(_CASES))
def test_dlio_accelerators_sustained_within_one_or_15pct(case_id):
    case = _CASES[case_id]
    predicted = vs.sustained(case)
    assert vs.within(predicted, case.published), (predicted, case.published)


def test_dlio_drive_bound_utilization_is_bandwidth_over_demand():
    case = _CASES["Micron 9400 Gen4 NVMe unet3d H100"]
    spec = vs.load_spec()
    batch_bytes = 7 * spec["workload_unet3d"]["sample_bytes_mean"]
    # 4 accelerators ask for more than the drive gives: epoch 1 reads everything from the drive,
    # epochs 2-5 find 1/5 of the dataset in the page cache (dataset = 5 x the cache)
    cold = 7e9 * 0.323 / (4 * batch_bytes)
    warm = cold / (1 - 1 / spec["dataset_to_host_memory"])
    epochs = spec["epochs"]
    au = vs.utilization(case, 4, spec)
    assert au == pytest.approx((cold + (epochs - 1) * warm) / epochs, rel=0.02)
    assert vs.utilization(case, 1, spec) == pytest.approx(1.0)


def test_dlio_warm_epoch_reads_a_fifth_from_the_page_cache():
    """The warm run's consumption exceeds the drive's bandwidth by the cached fifth."""
    import hwsim

    case = _CASES["Micron 9550 Gen5 NVMe unet3d A100"]
    spec = vs.load_spec()
    cold = hwsim.run(vs.scenario_for(case, 12, spec)).summary["read_bytes_per_s"]
    warm = hwsim.run(vs.scenario_for(case, 12, spec, warm=True)).summary["read_bytes_per_s"]
    assert warm == pytest.approx(cold / (1 - 1 / spec["dataset_to_host_memory"]), rel=0.02)


# -- ResNet-50 (issue 3): the input pipeline's fitted CPU cost, validated on the V100 rows --------
vt = load_benchmark("validate_training")


def test_resnet50_rows_with_the_input_pipeline_are_within_15pct():
    spec = vt.load_spec()
    cases = {c.id: c for c in vt.load_cases(spec, ["resnet50"])}
    fitted = set(vt.fitted_rows(spec))
    assert {"resnet50 1xA100 amp b256", "resnet50 8xA100 amp b256"} <= fitted
    row = vt.run_case(cases["resnet50 8xV100 amp b256"], fitted)
    assert row.role == "validated" and abs(row.error) <= 0.15, row
    # the 64 loader threads at the fitted cost per image cap the rate (with the pytorch-amp
    # stack's compute factor the V100s' own rate lies just below that cap: GPU-bound, 6 % above
    # the published row, where the device-level factor made it input-bound at +8.9 %)
    decode = spec["resnet50"]["input_pipeline"]["decode_s_per_sample"]
    per_image = float(decode.split()[0]) * 1e-3
    assert row.predicted <= 64 / per_image * 1.01


def test_thread_pool_utilization_is_busy_threads_over_threads():
    sc = _train(_memory_data(5e-3, 4))        # 4 always-busy workers on 2 x 128 threads
    sc["outputs"]["utilization"] = True
    u = hwsim.run(sc).utilization
    cores = u[u["resource"] == "n0.cores"]
    assert len(cores) and cores["utilization"].max() == pytest.approx(4 / 256)
    assert ((cores["utilization"] >= 0) & (cores["utilization"] <= 1)).all()


def test_time_to_train_reads_later_epochs_from_the_page_cache():
    # 3 epochs of 40 steps; 20 simulated (epoch 1 on the disk), the rest extrapolated: the other
    # 20 steps of epoch 1 at the disk's step, epochs 2 and 3 at the step with the data in memory
    def run(cache: bool) -> dict:
        return hwsim.run({
            "name": "ttt", "cluster": {"node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 1,
                                                "local_storage": "hdd-7200"}},
            "workload": {"kind": "training", "model": {"preset": "logistic-regression"},
                         "global_batch": 64, "loss": "bce", "epochs": 3,
                         "data": {"storage": "local", "samples": 64 * 40, "sample_bytes": 4096,
                                  "page_cache": cache}},
            "outputs": {"events": False, "utilization": False, "trace": False}}).summary
    cached, disk = run(True), run(False)
    first, t, tc = cached["first_step_s"], cached["step_time_s"], cached["cached_step_time_s"]
    assert tc < t / 100
    assert cached["time_to_train_s"] == pytest.approx(first + 19 * t + 20 * t + 80 * tc,
                                                      rel=1e-9)
    assert "cached_step_time_s" not in disk
    assert disk["time_to_train_s"] == pytest.approx(
        disk["first_step_s"] + 119 * disk["step_time_s"], rel=1e-9)


def test_io_bound_and_gpu_bound_flip_where_the_numbers_say(gpu_step_s):
    # sequential 1 MiB reads from one SATA SSD (550 MB/s): a batch of B samples of s bytes
    # takes B * s / 550e6 to read; the flip is at s = 550e6 * t_gpu / B
    from hwsim.catalog import get_storage
    bw = get_storage("sata-ssd").read_bw_bytes_per_s
    flip = bw * gpu_step_s / B

    def run(s: float) -> dict:
        return hwsim.run(_train({"storage": "local", "samples": 1281167, "sample_bytes": s,
                                 "access": "sequential", "workers": 2},
                                node={"local_storage": "sata-ssd"}, steps=21)).summary
    below, above = run(0.8 * flip), run(1.25 * flip)
    assert below["bottleneck"] in ("compute", "memory") and below["input_wait_share"] < 0.03
    assert above["step_time_s"] == pytest.approx(B * 1.25 * flip / bw, rel=0.01)
    assert above["input_wait_share"] == pytest.approx(0.2, abs=0.03)
    slow = run(2.5 * flip)
    assert slow["bottleneck"] == "storage"
