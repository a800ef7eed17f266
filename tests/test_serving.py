"""LLM serving (hwsim.jobs.serving): physical bounds, conservation, Little's law, determinism,
KV-cache pressure, scheduler effects, and pinned errors for bad input."""

from __future__ import annotations


import numpy as np
import pytest

import hwsim
from scenario_edit import edited
from hwsim.catalog import get_device
from hwsim.workloads import resolve_model
from hwsim.workloads.inference import inference_flops, serving_cost

BASE = {
    "name": "serve",
    "seed": 3,
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8,
                                     "cpu": "EPYC-7742", "intra_node": "nvlink3"}},
    "workload": {
        "kind": "inference",
        "model": {"preset": "llama2-7b"},
        "precision": "fp16",
        "parallelism": {"tp": 1, "replicas": 1},
        "scheduler": {"policy": "continuous", "max_batch_size": 64,
                      "max_batched_tokens": 4096},
        "arrivals": {"process": "poisson", "rate_per_s": 4.0, "requests": 300,
                     "prompt_tokens": 512, "output_tokens": 64},
    },
}


def _run(**changes):
    return hwsim.run(edited(BASE, changes))


def test_one_request_obeys_the_roofline_bounds():
    """Alone: the first token takes at least the prompt's FLOPs at peak, and every later token
    at least reading the weights and the KV cache at the HBM's full bandwidth."""
    r = _run(**{"workload.arrivals": {"process": "constant", "rate_per_s": 0.01, "requests": 1,
                                      "prompt_tokens": 1024, "output_tokens": 32}})
    q = r.requests.iloc[0]
    spec = resolve_model({"preset": "llama2-7b"})
    dev = get_device("A100-SXM4-80GB")
    pairs = 1024 * 1025 / 2
    assert q.ttft_s >= inference_flops(spec, tokens=1024, pairs=pairs) / dev.peak("fp16")
    cost = serving_cost(spec, precision="fp16")
    floor = (cost.weight_bytes + 1024 * cost.kv_bytes_per_token) / dev.mem_bw_bytes_per_s
    assert q.tpot_s >= floor
    assert q.tpot_s < 3 * floor  # and decode is memory-bound: close to that floor
    assert q.queue_s == 0.0 and q.preemptions == 0


def test_throughput_grows_with_batch_size():
    tput = []
    for b in (1, 8, 64):
        r = _run(**{"workload.scheduler": {"policy": "static", "max_batch_size": b,
                                           "max_batched_tokens": 65536},
                    "workload.arrivals": {"process": "constant", "rate_per_s": 1000.0,
                                          "requests": 128, "prompt_tokens": 256,
                                          "output_tokens": 64}})
        tput.append(r.summary["output_tokens_per_s"])
    assert tput[0] < tput[1] < tput[2]
    assert tput[2] > 10 * tput[0]  # decode is bandwidth-bound: batching is nearly free


def test_conservation_littles_law_and_determinism():
    r = _run(**{"workload.arrivals.requests": 1500})
    req, s = r.requests, r.summary
    assert len(req) == 1500 and req["id"].is_unique and s["requests_completed"] == 1500
    assert (req["first_token_s"] >= req["start_s"]).all()
    assert (req["end_s"] >= req["first_token_s"]).all() and (req["start_s"] >= req["arrival_s"]).all()
    # Little's law: mean number in system = arrival rate x mean time in system (sampling error)
    lam = 4.0
    assert s["requests_in_system_mean"] == pytest.approx(lam * req["e2e_s"].mean(), rel=0.1)
    again = _run(**{"workload.arrivals.requests": 1500})
    assert again.requests.equals(req)
    assert s["ttft_p99_s"] >= s["ttft_p50_s"] > 0 and s["tpot_p99_s"] >= s["tpot_p50_s"] > 0


def test_a_small_kv_cache_preempts_and_still_serves_everyone():
    # 14 GB of weights in 20% of 80 GB leaves ~2 GB of KV cache: a few thousand tokens
    r = _run(**{"workload.scheduler.memory_fraction": 0.2,
                "workload.arrivals": {"process": "constant", "rate_per_s": 50.0, "requests": 60,
                                      "prompt_tokens": 512, "output_tokens": 256}})
    assert r.summary["preemptions"] > 0
    assert r.summary["requests_completed"] == 60
    assert (r.requests["output_tokens"] == 256).all()
    big = _run(**{"workload.arrivals": {"process": "constant", "rate_per_s": 50.0,
                                        "requests": 60, "prompt_tokens": 512,
                                        "output_tokens": 256}})
    assert big.summary["preemptions"] == 0
    assert big.summary["e2e_p99_s"] < r.summary["e2e_p99_s"]


def test_weights_that_do_not_fit_are_a_result():
    r = _run(**{"workload.model": {"preset": "llama2-70b"}})
    assert r.summary["fits"] is False and "weights" in r.summary["bottleneck_label"]
    r4 = _run(**{"workload.model": {"preset": "llama2-70b"}, "workload.parallelism.tp": 4,
                 "workload.arrivals.requests": 20})
    assert r4.summary["fits"] is True and r4.summary["requests_completed"] == 20


def test_chunked_prefill_keeps_decodes_flowing():
    """Long prompts arriving among decoding requests: without chunking a prefill iteration
    stalls every decode (vLLM's prefill-first); with a token budget the worst inter-token gap
    shrinks (Sarathi)."""
    arrivals = {"process": "poisson", "rate_per_s": 3.0, "requests": 200,
                "prompt_tokens": {"dist": "uniform", "low": 256, "high": 4000},
                "output_tokens": 128}
    plain = _run(**{"workload.arrivals": arrivals,
                    "workload.scheduler.max_batched_tokens": 4096})
    chunked = _run(**{"workload.arrivals": arrivals,
                      "workload.scheduler": {"policy": "continuous", "max_batch_size": 64,
                                             "max_batched_tokens": 512,
                                             "chunked_prefill": True}})
    assert chunked.summary["tpot_p99_s"] < plain.summary["tpot_p99_s"]


def test_two_replicas_and_routers():
    base = {"workload.parallelism.replicas": 2, "workload.arrivals.rate_per_s": 8.0}
    rr = _run(**base)
    assert set(rr.requests["replica"]) == {0, 1}
    counts = rr.requests["replica"].value_counts()
    assert abs(counts[0] - counts[1]) <= 1  # round robin
    lo = _run(**base, **{"workload.router": "least_outstanding"})
    assert lo.summary["requests_completed"] == 300
    one = _run(**{"workload.arrivals.rate_per_s": 8.0})
    assert rr.summary["e2e_p50_s"] < one.summary["e2e_p50_s"]


@pytest.mark.parametrize("changes,match", [
    ({"workload.scheduler.max_batched_tokens": 256, "workload.scheduler.chunked_prefill": False},
     r"workload\.scheduler: a prompt of 512 tokens exceeds max_batched_tokens=256 without "
     r"chunked prefill"),
    ({"workload.parallelism.replicas": 9},
     r"workload\.parallelism: 9 replicas of tp x pp = 1 x 1 need 9 gpu devices; the cluster "
     r"has 8"),
    ({"workload.arrivals": {"process": "poisson", "requests": 5}},
     r"workload\.arrivals.*needs rate_per_s"),
])
def test_bad_serving_input_is_refused(changes, match):
    with pytest.raises(hwsim.ScenarioError, match=match):
        _run(**changes)


def test_closed_loop_clients_keep_at_most_their_number_in_flight():
    r = _run(**{"workload.arrivals": {"process": "closed", "clients": 4, "requests": 60,
                                      "think_s": 0.5, "prompt_tokens": 256,
                                      "output_tokens": 32}})
    req = r.requests
    assert len(req) == 60 and r.summary["requests_completed"] == 60
    # at no instant are more than 4 requests in the system
    t = np.sort(np.concatenate([req.arrival_s.to_numpy(), req.end_s.to_numpy()]))
    level = [((req.arrival_s <= x) & (req.end_s > x)).sum() for x in t]
    assert max(level) <= 4 and r.summary["requests_in_system_mean"] <= 4
    # a client's next request leaves only after its previous one ended: 4 first at time 0
    assert (req.arrival_s == 0.0).sum() == 4
    with pytest.raises(hwsim.ScenarioError, match=r"process 'closed' needs clients"):
        _run(**{"workload.arrivals": {"process": "closed", "requests": 5}})


def test_iteration_timeline_tracks_batch_and_kv_usage():
    r = _run()
    it = r.iterations
    assert len(it) == r.summary["iterations"] and (it.end_s >= it.start_s).all()
    assert it.batch_size.max() <= 64 and (it.kv_blocks_used <= it.kv_blocks_total).all()
    assert it.kv_blocks_used.max() == r.summary["kv_blocks_used_max"]


def test_swap_preemption_moves_the_kv_cache_over_pcie_instead_of_recomputing():
    small = {"workload.scheduler.memory_fraction": 0.2,
             "workload.arrivals": {"process": "constant", "rate_per_s": 50.0, "requests": 60,
                                   "prompt_tokens": 512, "output_tokens": 256}}
    swap = _run(**small, **{"workload.scheduler.preemption": "swap"})
    assert swap.summary["preemptions"] > 0 and swap.summary["requests_completed"] == 60
    ev = swap.events
    out = ev[(ev.kind == "copy") & (ev.name == "kv.swap_out")]
    back = ev[(ev.kind == "copy") & (ev.name == "kv.swap_in")]
    assert len(out) and out.bytes.sum() == pytest.approx(back.bytes.sum())
    assert set(out.resource.str.split("->").str[1]) == {"n0.mem"}  # to host memory
    # nothing is prefilled twice: the iterations' tokens are the prompts plus the decodes
    it = swap.iterations
    assert it.tokens.sum() == 60 * 512 + 60 * 255
    rec = _run(**small)
    assert rec.iterations.tokens.sum() > 60 * 512 + 60 * 255  # recompute prefills again


def test_disaggregated_prefill_and_decode_hand_the_kv_cache_over():
    """One prefill and one decode replica: every multi-token request's KV cache crosses
    NVLink once, decodes never wait behind a prefill (lower TPOT tail than two colocated
    replicas without chunking), and the first token comes from the prefill replica."""
    arrivals = {"process": "poisson", "rate_per_s": 4.0, "requests": 200,
                "prompt_tokens": {"dist": "uniform", "low": 512, "high": 3000},
                "output_tokens": 64}
    dis = _run(**{"workload.parallelism": {"tp": 1, "replicas": 2, "prefill_replicas": 1},
                  "workload.arrivals": arrivals})
    col = _run(**{"workload.parallelism": {"tp": 1, "replicas": 2},
                  "workload.arrivals": arrivals})
    assert dis.summary["requests_completed"] == 200
    ev = dis.events
    hand = ev[(ev.kind == "flow") & (ev.name == "kv.handoff")]
    assert len(hand) == 200 and (hand.category == "comm:nvlink").all()
    assert (dis.requests.replica == 1).all()  # every request finished on the decode replica
    assert dis.summary["tpot_p99_s"] < col.summary["tpot_p99_s"]
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.parallelism\.prefill_replicas: "
                                                  r"prefill_replicas=2 must leave"):
        _run(**{"workload.parallelism": {"tp": 1, "replicas": 2, "prefill_replicas": 2}})


def _classic(model, node, precision, rate, batch=64, delay=0.002, requests=1000, **extra):
    return hwsim.run({"name": "classic", "seed": 1, "cluster": {"nodes": 1, "node": node},
                      "workload": {"kind": "inference", "model": {"preset": model},
                                   "precision": precision,
                                   "scheduler": {"policy": "dynamic", "max_batch_size": batch,
                                                 "max_queue_delay_s": delay},
                                   "arrivals": {"process": "poisson", "rate_per_s": rate,
                                                "requests": requests}, **extra}})


GPU = {"gpu": "A100-SXM4-80GB", "gpus_per_node": 1, "cpu": "EPYC-7742"}
CPU = {"cpu": "EPYC-7742"}


def test_classic_serving_gpu_beats_cpu_and_batches_under_load():
    gpu = _classic("resnet50", GPU, "fp16", 100)
    cpu = _classic("resnet50", CPU, "fp32", 100)
    assert gpu.summary["e2e_p50_s"] < cpu.summary["e2e_p50_s"]
    assert gpu.summary["requests_completed"] == cpu.summary["requests_completed"] == 1000
    assert gpu.requests.tpot_s.isna().all()  # one response per request: TTFT = e2e
    assert (gpu.requests.ttft_s == gpu.requests.e2e_s).all()
    busy = _classic("resnet50", GPU, "fp16", 4000)
    assert busy.summary["batch_size_mean"] > 4 * gpu.summary["batch_size_mean"]
    assert busy.iterations.batch_size.max() <= 64


def test_dynamic_batching_waits_at_most_the_queue_delay_at_low_load():
    """At a trickle a request waits for company up to max_queue_delay_s, never longer."""
    slow = _classic("resnet50", GPU, "fp16", 5, delay=0.010, requests=200)
    q = slow.requests.queue_s
    assert q.max() <= 0.010 + 1e-9 and q.median() > 0.005
    fast = _classic("resnet50", GPU, "fp16", 5, delay=0.0, requests=200)
    assert fast.summary["e2e_p50_s"] < slow.summary["e2e_p50_s"]


def test_bert_and_dlrm_serve():
    bert = _classic("bert-large", GPU, "fp16", 200, batch=32, seq_len=128)
    assert bert.summary["requests_completed"] == 1000
    dlrm = _classic("dlrm", GPU, "fp16", 20000, batch=2048, requests=20000)
    assert dlrm.summary["requests_completed"] == 20000


def test_classic_and_llm_schedulers_are_not_mixed():
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.scheduler\.policy: model "
                                                  r"'resnet50' is not a decoder LLM"):
        _run(**{"workload.model": {"preset": "resnet50"}})
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.scheduler\.policy: policy "
                                                  r"'dynamic' serves classic models"):
        _run(**{"workload.scheduler.policy": "dynamic"})


def test_serving_bottleneck_names_what_the_requests_waited_for():
    light = _run()  # small batches of a 7B model: decode reads the weights
    assert light.summary["bottleneck"] == "decode_bandwidth"
    shares = [light.summary[f"time_share_{k}"] for k in ("queueing", "prefill", "decode")]
    assert sum(shares) == pytest.approx(1.0) and min(shares) >= 0
    # a KV cache too small for the load: the queue waits for blocks
    tight = _run(**{"workload.scheduler.memory_fraction": 0.19,
                    "workload.arrivals": {"process": "constant", "rate_per_s": 100.0,
                                          "requests": 200, "prompt_tokens": 1024,
                                          "output_tokens": 256}})
    assert tight.summary["kv_blocked_share"] > 0.5
    assert tight.summary["bottleneck"] == "kv_capacity"
    assert tight.iterations.kv_blocked.any()


NO_EVICT_ARRIVALS = {"process": "constant", "rate_per_s": 50.0, "requests": 60,
                     "prompt_tokens": 512, "output_tokens": 256}


def test_no_evict_reserves_each_whole_output_and_never_preempts():
    """TensorRT-LLM's GUARANTEED_NO_EVICT (``scheduler.no_evict``): a sequence is admitted only
    with the KV blocks of its prompt and whole output free, and keeps them: nothing is ever
    preempted, and at no instant do more sequences run than the cache holds whole."""
    evict = _run(**{"workload.scheduler.memory_fraction": 0.2,
                    "workload.arrivals": NO_EVICT_ARRIVALS})
    kept = _run(**{"workload.scheduler.memory_fraction": 0.2, "workload.scheduler.no_evict": True,
                   "workload.arrivals": NO_EVICT_ARRIVALS})
    assert evict.summary["preemptions"] > 0
    s, req = kept.summary, kept.requests
    assert s["preemptions"] == 0 and s["requests_completed"] == 60
    assert (req["preemptions"] == 0).all() and (req["output_tokens"] == 256).all()
    assert s["kv_blocks_used_max"] <= s["kv_blocks_total"]
    per_seq = -(-(512 + 256) // 16)  # vLLM's 16-token blocks
    edges = sorted([(t, 1) for t in req["start_s"]] + [(t, -1) for t in req["end_s"]],
                   key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= s["kv_blocks_total"] // per_seq
    assert s["batch_size_mean"] < evict.summary["batch_size_mean"]


def test_a_recompute_longer_than_the_token_budget_runs_alone_and_finishes():
    """Without chunked prefill a preempted sequence prefills its prompt and what it had
    generated again; where that is more than max_batched_tokens it runs alone once the
    replica has drained, instead of waiting for a budget it can never fit (every request
    ends)."""
    r = _run(**{"workload.scheduler": {"policy": "continuous", "max_batch_size": 64,
                                       "max_batched_tokens": 1024, "chunked_prefill": False,
                                       "memory_fraction": 0.2},
                "workload.arrivals": {"process": "constant", "rate_per_s": 50.0,
                                      "requests": 40, "prompt_tokens": 768,
                                      "output_tokens": 512}})
    assert r.summary["preemptions"] > 0
    assert r.summary["requests_completed"] == 40
    assert r.requests["end_s"].notna().all()


def test_no_evict_reserves_whole_outputs_on_the_decode_replicas_too():
    """Disaggregated with no_evict: a decode replica takes a handed-over sequence only with the
    blocks of its whole output, so it never needs a block it does not hold."""
    r = _run(**{"workload.parallelism": {"tp": 1, "replicas": 3, "prefill_replicas": 1},
                "workload.scheduler.no_evict": True,
                "workload.scheduler.memory_fraction": 0.25,
                "workload.arrivals": NO_EVICT_ARRIVALS})
    s = r.summary
    assert s["preemptions"] == 0 and s["requests_completed"] == 60
    assert s["kv_blocks_used_max"] <= s["kv_blocks_total"]
    per_seq = -(-(512 + 256) // 16)
    decode = r.iterations[r.iterations["replica"] > 0]
    assert (decode["kv_blocks_used"] % per_seq == 0).all()  # whole reservations only
