"""Speculative decoding (hwsim.workloads.speculative, hwsim.jobs.speculative): the closed form
of tokens per step, acceptance 0 = plain decoding plus the verification's cost, determinism,
the speed-up's dependence on batch size, KV blocks within capacity, pinned errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import simpy
import yaml

import hwsim
from hwsim.engine import Recorder
from hwsim.jobs.serving import ServingJob
from hwsim.jobs.system import System
from hwsim.scenario.build import prepare
from hwsim.scenario.loader import load_scenario
from hwsim.workloads import resolve_model
from hwsim.workloads.speculative import (SpeculativeConfig, draw_accepted,
                                         expected_tokens_per_step, proposer_cost, verify_shape)

H100 = {"nodes": 1, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 4, "cpu": "Xeon-8480",
                             "intra_node": "nvlink4"}}
BASE = {
    "name": "spec", "seed": 5, "cluster": H100,
    "workload": {
        "kind": "inference", "model": {"preset": "llama2-70b"}, "precision": "fp16",
        "parallelism": {"tp": 4},
        "scheduler": {"policy": "static", "max_batch_size": 1, "max_batched_tokens": 65536},
        "arrivals": {"process": "closed", "clients": 1, "requests": 1, "prompt_tokens": 512,
                     "output_tokens": 128},
    },
}
DRAFT = {"method": "draft", "draft_model": "llama2-7b", "tokens": 4, "acceptance": 0.8}


def _scenario(batch: int = 1, speculative: dict | None = None, **workload) -> dict:
    s = copy.deepcopy(BASE)
    w = s["workload"]
    w["scheduler"]["max_batch_size"] = batch
    w["arrivals"]["requests"] = w["arrivals"]["clients"] = batch  # one static batch, all at 0
    w.update(workload)
    if speculative is not None:
        w["speculative"] = speculative
    return s


def _job(s: dict, free: list | None = None) -> ServingJob:
    """The serving job of scenario *s*, run to its end (its internals open to the test); with
    *free*, each replica's free KV blocks after every speculative step are appended to it."""
    sc = load_scenario(s)
    g, plan = prepare(sc)
    env = simpy.Environment()
    job = ServingJob(System(env, g, Recorder(), np.random.default_rng(sc.seed)), plan)
    if free is not None:
        advance = job.speculation.advance

        def watched(r, decodes):
            advance(r, decodes)
            free.append(r.blocks_free)
        job.speculation.advance = watched
    job.start()
    env.run()
    return job


# -- the numbers ---------------------------------------------------------------------------------
def test_tokens_per_step_closed_form_and_truncated_geometric_draws():
    assert expected_tokens_per_step(0.0, 4) == 1.0
    assert expected_tokens_per_step(1.0, 4) == 5.0
    assert expected_tokens_per_step(0.8, 4) == pytest.approx(1 + 0.8 + 0.64 + 0.512 + 0.4096)
    rng = np.random.default_rng(0)
    assert (draw_accepted(rng, 0.0, 4, 100) == 0).all()
    assert (draw_accepted(rng, 1.0, 4, 100) == 4).all()
    n = draw_accepted(rng, 0.6, 3, 200_000)
    assert n.min() == 0 and n.max() == 3
    for i in (1, 2, 3):  # P(n >= i) = alpha^i
        assert (n >= i).mean() == pytest.approx(0.6 ** i, abs=0.005)
    assert (n + 1).mean() == pytest.approx(expected_tokens_per_step(0.6, 3), abs=0.01)


def test_verification_is_a_chunk_of_k_plus_one_positions_per_sequence():
    # cached 10 and 20, k = 2: positions attend 11, 12, 13 and 21, 22, 23 keys
    assert verify_shape(2, [10, 20]) == (6, 11 + 12 + 13 + 21 + 22 + 23, 13 + 23, 6)
    # k = 0 would be plain decoding: one token attending cached + 1 keys
    assert verify_shape(0, [10, 20]) == (2, 11 + 21, 32, 2)


def test_proposer_memory():
    target = resolve_model("llama2-70b")
    cfg = SpeculativeConfig("mtp", 3, 0.5)
    c = proposer_cost(cfg, target, tp=4, precision="fp16")
    h = target.hidden
    # fp16: Q, O, K, V (1,024 wide) and the gated FFN split by tp, the two norms replicated
    layer = 2 * ((2 * h * h + 2 * h * 1024 + 3 * h * target.ffn_hidden) / 4 + 2 * h)
    assert c.weight_bytes == pytest.approx(3 * (layer + 2 * 2 * h * h / 4))
    assert c.kv_bytes_per_token == 3 * 2 * 2 * 128 * 2  # k layers x K,V x 2 heads/rank x fp16
    assert proposer_cost(SpeculativeConfig("ngram", 3, 0.5), target, tp=4,
                         precision="fp16").weight_bytes == 0


# -- the job -------------------------------------------------------------------------------------
def test_acceptance_zero_is_plain_decoding_plus_the_verification():
    """n-gram proposals cost nothing; at acceptance 0 every step keeps one token: the same
    iterations as plain decoding, each decode iteration the target's pass over k + 1 positions."""
    k = 3
    plain = _job(_scenario())
    spec = _job(_scenario(speculative={"method": "ngram", "tokens": k, "acceptance": 0.0}))
    sp = spec.speculation
    assert sp.summary()["spec_tokens_per_step"] == 1.0
    assert sp.summary()["spec_acceptance_rate"] == 0.0
    assert sp.steps == 127 and sp.examined == 127 and sp.accepted == 0
    its_p, its_s = plain.replicas[0].batch_tokens, spec.replicas[0].batch_tokens
    assert len(its_p) == len(its_s) == 128
    assert its_s[0][1] - its_s[0][0] == pytest.approx(its_p[0][1] - its_p[0][0])  # prefill
    devs = spec.replicas[0].stages[0]
    for i, (t0, t1, *_rest) in enumerate(its_s[1:]):
        cached = 512 + i
        want = spec._stage_time(0, devs, *verify_shape(k, [cached])[:2], 0, 0.0, k + 1,
                                kv_tokens=cached + k + 1)[0]
        plain_t = plain._stage_time(0, devs, 0, 0.0, 1, float(cached + 1), 1)[0]
        assert t1 - t0 == pytest.approx(want)
        assert want >= plain_t
        assert its_p[i + 1][1] - its_p[i + 1][0] == pytest.approx(plain_t)


def test_measured_tokens_per_step_matches_the_closed_form():
    alpha, k = 0.7, 3
    job = _job(_scenario(8, {"method": "ngram", "tokens": k, "acceptance": alpha},
                         arrivals={"process": "constant", "rate_per_s": 1000.0, "requests": 8,
                                   "prompt_tokens": 128, "output_tokens": 2000}))
    sp = job.speculation
    p = np.array([alpha ** i * (1 - alpha) for i in range(k)] + [alpha ** k])  # P(n = i)
    mean = float(p @ (np.arange(k + 1) + 1))
    sd = float(np.sqrt(p @ (np.arange(k + 1) + 1 - mean) ** 2))
    assert mean == pytest.approx(expected_tokens_per_step(alpha, k))
    steps = sp.steps
    assert steps > 4000
    # the last step of each sequence may be cut by its remaining output: at most 8 short steps
    raw = (sp.accepted + steps) / steps
    assert abs(raw - mean) < 4 * sd / np.sqrt(steps)
    assert sp.summary()["spec_tokens_per_step"] == pytest.approx(8 * 1999 / steps)
    assert abs(sp.summary()["spec_acceptance_rate"] - alpha) < 0.02
    assert all(s.generated == 2000 for s in job.seqs)


def test_same_seed_same_run_other_seed_other_draws():
    s = _scenario(4, {"method": "ngram", "tokens": 4, "acceptance": 0.6})
    a, b = hwsim.run(s), hwsim.run(s)
    assert a.requests.equals(b.requests) and a.summary == b.summary
    s["seed"] = 6
    c = hwsim.run(s)
    assert not a.requests["end_s"].equals(c.requests["end_s"])


def test_speculation_helps_at_low_batch_and_hurts_at_high_batch():
    """A Llama-2-7B draft for Llama-2-70B on 4 H100: at batch 1 decode is bound by reading the
    weights, so verifying 5 positions costs about one plain step and the draft's passes are
    cheap; at batch 256 the verification's 1,280 tokens make the target compute-bound and the
    speed-up falls below 1 (the vLLM blog, 2024-10-17, reports slowdowns at high QPS)."""
    speedup = []
    for b in (1, 16, 64, 256):
        short = {"process": "closed", "clients": b, "requests": b, "prompt_tokens": 256,
                 "output_tokens": 128}
        plain = hwsim.run(_scenario(b, arrivals=short))
        spec = hwsim.run(_scenario(b, DRAFT, arrivals=short))
        for r in (plain, spec):  # one static batch of b, the KV cache holding all of it
            assert (r.iterations["prefill_tokens"] > 0).sum() == 1
            assert r.iterations["batch_size"].max() == b
        assert spec.summary["spec_tokens_per_step"] > 3.0
        speedup.append(plain.summary["tpot_mean_s"] / spec.summary["tpot_mean_s"])
    assert speedup[0] > 1.4
    assert speedup == sorted(speedup, reverse=True)
    assert speedup[-1] < 1.0


def test_mtp_and_ngram_speed_up_batch_one():
    plain = hwsim.run(_scenario()).summary
    for sp in ({"method": "mtp", "tokens": 2, "acceptance": 0.8},
               {"method": "ngram", "tokens": 4, "acceptance": 0.5}):
        s = hwsim.run(_scenario(speculative=sp)).summary
        assert s["tpot_mean_s"] < plain["tpot_mean_s"]
        assert s["output_tokens_per_s"] > plain["output_tokens_per_s"]
    mtp = hwsim.run(_scenario(speculative={"method": "mtp", "tokens": 2, "acceptance": 0.8}))
    assert mtp.summary["memory_weights_gb"] > plain["memory_weights_gb"]
    assert "spec_tokens_per_step" not in plain


@pytest.mark.parametrize("chunked", [False, True])
def test_kv_blocks_never_over_capacity_and_every_token_is_served(chunked):
    """A small KV cache under continuous batching: the k + 1 reserved slots preempt sequences,
    usage never exceeds the capacity, and every request gets exactly its output tokens."""
    s = _scenario(64, {"method": "ngram", "tokens": 4, "acceptance": 0.7},
                  model={"preset": "llama2-7b"}, parallelism={"tp": 1},
                  scheduler={"policy": "continuous", "max_batch_size": 64,
                             "max_batched_tokens": 2048, "memory_fraction": 0.2,
                             "chunked_prefill": chunked},
                  arrivals={"process": "constant", "rate_per_s": 1000.0, "requests": 64,
                            "prompt_tokens": 512, "output_tokens": 128})
    free: list[int] = []
    job = _job(s, free)
    r = job.replicas[0]
    assert min(free) >= 0 and len(free) > 100
    used = [b[4] for b in r.batch_tokens]
    assert max(used) <= r.blocks_total and r.blocks_free == r.blocks_total
    if chunked:  # the decodes' k + 1 positions count against the token budget
        assert max(b[3] for b in r.batch_tokens) <= 2048
    assert sum(q.preemptions for q in job.seqs) > 0
    assert all(q.generated == 128 and np.isfinite(q.end_s) for q in job.seqs)
    res = hwsim.run(s)
    assert res.summary["kv_blocks_used_max"] <= res.summary["kv_blocks_total"]
    assert res.summary["requests_completed"] == 64


def test_a_draft_that_does_not_fit_is_a_result():
    s = _scenario(precision="fp8", parallelism={"tp": 1})
    s["cluster"] = copy.deepcopy(H100)
    s["cluster"]["node"]["gpus_per_node"] = 1
    assert hwsim.run(s).summary["fits"]
    r = hwsim.run({**s, "workload": {**s["workload"], "speculative": DRAFT}})
    assert not r.summary["fits"] and r.summary["bottleneck"] == "memory_capacity"


@pytest.mark.parametrize("speculative,match", [
    ({**DRAFT, "acceptance": 1.2},
     r"workload\.speculative\.acceptance: input should be less than or equal to 1"),
    ({**DRAFT, "acceptance": -0.1},
     r"workload\.speculative\.acceptance: input should be greater than or equal to 0"),
    ({"method": "ngram", "tokens": 0, "acceptance": 0.5},
     r"workload\.speculative\.tokens: input should be greater than or equal to 1"),
    ({"method": "draft", "tokens": 4, "acceptance": 0.5},
     r"workload\.speculative: method 'draft' needs draft_model"),
    ({"method": "ngram", "draft_model": "llama2-7b", "tokens": 4, "acceptance": 0.5},
     r"workload\.speculative: draft_model belongs to method 'draft', not 'ngram'"),
    ({**DRAFT, "draft_model": "llama2-70b"},
     r"workload\.speculative\.draft_model: the draft model 'llama2-70b' \(69 B parameters\) is "
     r"not smaller than the target"),
    ({**DRAFT, "draft_model": "llama3-8b"},
     r"workload\.speculative\.draft_model: the draft model 'llama3-8b' has a vocabulary of "
     r"128,256 tokens, the target 'llama2-70b' 32,000"),
    ({**DRAFT, "draft_model": {"layers": 2, "hidden": 768, "heads": 6, "vocab": 32000}},
     r"workload\.speculative\.draft_model: tp=4 must divide heads=6"),
    ({"method": "beam", "tokens": 4, "acceptance": 0.5},
     r"workload\.speculative\.method: 'beam' is not allowed; valid values: draft, ngram, mtp"),
])
def test_bad_speculative_input_is_refused(speculative, match):
    with pytest.raises(hwsim.ScenarioError, match=match):
        hwsim.run(_scenario(speculative=speculative))


def test_a_draft_hf_config_is_read_from_the_scenario_folder(tmp_path):
    """A relative ``draft_model.hf_config`` resolves against the scenario's folder, as
    ``model.hf_config`` does; a missing file names the field."""
    cfg = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 1024,
           "num_attention_heads": 8, "num_key_value_heads": 8, "intermediate_size": 2816,
           "vocab_size": 32000, "hidden_act": "silu", "max_position_embeddings": 4096}
    (tmp_path / "draft.json").write_text(json.dumps(cfg))
    s = _scenario(speculative={**DRAFT, "draft_model": {"hf_config": "draft.json"}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(s))
    sc = load_scenario(path)
    assert sc.workload.speculative.draft_model.hf_config == str(tmp_path / "draft.json")
    assert hwsim.run(path).summary["spec_tokens_per_step"] > 1.0
    s["workload"]["speculative"]["draft_model"] = {"hf_config": "missing.json"}
    path.write_text(yaml.safe_dump(s))
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.speculative\.draft_model\.hf_config: "
                                                  r"no such Hugging Face config file"):
        load_scenario(path)
