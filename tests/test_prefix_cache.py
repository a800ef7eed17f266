"""Prefix caching (hwsim.jobs.prefix_cache, arrivals.prefix, scheduler.prefix_caching): no hit
is no change, KV blocks never over capacity, the system-prompt closed form, TTFT falls, LRU
eviction order, reference counts back to zero, and pinned errors for bad input."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import simpy

import hwsim
from scenario_edit import edited
from hwsim.analysis.headline import headline
from hwsim.engine import Recorder
from hwsim.jobs.prefix_cache import PrefixCache
from hwsim.jobs.serving import ServingJob
from hwsim.jobs.system import System
from hwsim.scenario.build import prepare
from hwsim.scenario.loader import load_scenario
from hwsim.workloads.arrivals import Request, from_trace, open_loop, shared_prefixes

BASE = {
    "name": "prefix",
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
        "arrivals": {"process": "poisson", "rate_per_s": 4.0, "requests": 200,
                     "prompt_tokens": 512, "output_tokens": 64},
    },
}
SYSTEM_PROMPT = {"workload.arrivals.prefix": {"tokens": 1000},
                 "workload.scheduler.prefix_caching": True}
# a KV cache of about 200 blocks (memory_fraction 0.19 of 80 GB less 13.5 GB of weights) that
# prefixes and running sequences fight over: evictions and preemptions
TIGHT = {"workload.scheduler.memory_fraction": 0.19, "workload.scheduler.prefix_caching": True,
         "workload.arrivals.rate_per_s": 20.0, "workload.arrivals.output_tokens": 512,
         "workload.arrivals.prefix": {"groups": 4, "tokens": 600}}
PREFIX_KEYS = ("prefix_hit_rate", "prefill_tokens_saved", "prefix_blocks_evicted")


def _scenario(**changes) -> dict:
    return edited(BASE, changes)


def _run(**changes):
    return hwsim.run(_scenario(**changes))


def _job(**changes) -> ServingJob:
    """The serving job itself, run to its end, to look at its replicas' caches."""
    sc = load_scenario(_scenario(**changes))
    g, plan = prepare(sc)
    env = simpy.Environment()
    job = ServingJob(System(env, g, Recorder(), np.random.default_rng(sc.seed)), plan)
    job.start()
    env.run()
    return job


# -- no hit, no change ---------------------------------------------------------------------------

def test_caching_without_shared_prefixes_changes_nothing():
    # a replica with a prefix cache runs one iteration at a time: so does the one without here
    # (fast-forward's closed-form run times differ from summed iteration times by 1e-14 s)
    off = _run(**{"workload.scheduler.fast_forward": False})
    on = _run(**{"workload.scheduler.prefix_caching": True})
    assert off.summary["preemptions"] == 0  # (a preempted sequence may hit its own blocks)
    pd.testing.assert_frame_equal(off.requests, on.requests)
    pd.testing.assert_frame_equal(off.iterations, on.iterations)
    assert on.summary["prefix_hit_rate"] == 0.0 and on.summary["prefill_tokens_saved"] == 0
    assert {k: v for k, v in on.summary.items() if k not in PREFIX_KEYS} == off.summary
    assert not any(k in off.summary for k in PREFIX_KEYS)  # caching off: no new keys


def test_without_shared_prefixes_caching_only_spares_recomputation():
    """No request shares a prefix, but the cache is small and sequences are preempted: with
    caching on, none hits at its first admission (hit rate 0), yet a preempted sequence finds
    its own blocks again (vLLM hashes every full block), so less is recomputed."""
    tight = {k: v for k, v in TIGHT.items() if k != "workload.arrivals.prefix"}
    on = _run(**tight)
    off = _run(**{**tight, "workload.scheduler.prefix_caching": False})
    assert off.summary["preemptions"] > 0 and on.summary["preemptions"] > 0
    assert on.summary["prefix_hit_rate"] == 0.0 and (on.requests["cached_tokens"] == 0).all()
    assert on.summary["prefill_tokens_saved"] > 0
    assert on.iterations["prefill_tokens"].sum() < off.iterations["prefill_tokens"].sum()


def test_prefixes_without_caching_are_only_longer_prompts():
    """Caching off, a 1,000-token system prompt before 512 own tokens runs exactly as 1,512-token
    prompts; share 0 exactly as no prefix (the prefix draws come after all the others)."""
    plain = _run(**{"workload.arrivals.prompt_tokens": 1512})
    shared = _run(**{"workload.arrivals.prefix": {"tokens": 1000}})
    assert (shared.requests["prefix_tokens"] == 1000).all()
    pd.testing.assert_frame_equal(plain.requests, shared.requests.assign(prefix_tokens=0))
    pd.testing.assert_frame_equal(plain.iterations, shared.iterations)
    assert plain.summary == shared.summary
    none = _run(**{"workload.arrivals.prefix": {"groups": 5, "tokens": 800, "share": 0.0}})
    base = _run()
    pd.testing.assert_frame_equal(base.requests, none.requests)
    assert base.summary == none.summary


# -- capacity and reference counts ----------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    TIGHT,
    {**TIGHT, "workload.scheduler.preemption": "swap"},
    {**TIGHT, "workload.scheduler.chunked_prefill": True,
     "workload.scheduler.max_batched_tokens": 512},
    {**SYSTEM_PROMPT, "workload.scheduler.policy": "static",
     "workload.scheduler.max_batch_size": 16},
    {**SYSTEM_PROMPT, "workload.parallelism": {"tp": 1, "replicas": 3, "prefill_replicas": 1},
     "workload.arrivals.prefix": {"groups": 2, "tokens": 800}},
], ids=["recompute", "swap", "chunked", "static", "disaggregated"])
def test_kv_blocks_never_over_capacity_and_references_return_to_zero(changes):
    r = _run(**changes)
    it = r.iterations
    # every iteration: blocks in use (private and shared) plus idle cached ones fit the cache
    assert (it["kv_blocks_used"] + it["kv_blocks_cached_idle"] <= it["kv_blocks_total"]).all()
    # shared blocks in use are blocks in use; idle ones are cached ones
    assert (it["kv_blocks_cached"] - it["kv_blocks_cached_idle"] <= it["kv_blocks_used"]).all()
    assert (it["kv_blocks_cached_idle"] <= it["kv_blocks_cached"]).all()
    assert r.summary["requests_completed"] == r.summary["requests"]
    job = _job(**changes)
    assert all(np.isfinite(q.end_s) for q in job.seqs)
    for rep in job.replicas:  # at the end nothing is referenced and every block is free
        c = rep.cache
        assert c.referenced() == 0 and c.idle == c.blocks <= rep.blocks_total
        assert rep.blocks_free == rep.blocks_total
        c.trim(rep.blocks_free)
        assert c.empty + len(c.queue) == rep.blocks_total  # the free queue is every block


def test_tight_cache_evicts_and_preempts_yet_completes_deterministically():
    a, b = _run(**TIGHT), _run(**TIGHT)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    s = a.summary
    assert s["prefix_blocks_evicted"] > 0 and s["preemptions"] > 0
    assert 0 < s["prefix_hit_rate"] < 1
    # re-admissions after a recompute preemption hit too: saved >= hits at first admission
    assert s["prefill_tokens_saved"] >= a.requests["cached_tokens"].sum()


# -- closed forms ---------------------------------------------------------------------------------

@pytest.mark.parametrize("replicas", [1, 2])
def test_system_prompt_hit_rate_is_its_closed_form(replicas):
    """Every request starts with the same 1,000-token prompt; the cache never fills. The first
    request on each replica misses; every later one finds the prompt's 62 full 16-token blocks
    (992 tokens): hit rate (N - R) * 992 / (N * 1512), and exactly that much prefill saved."""
    n, own, T, B = 200, 512, 1000, 16
    r = _run(**SYSTEM_PROMPT, **{"workload.parallelism.replicas": replicas})
    s, req = r.summary, r.requests
    hit = T // B * B
    assert s["prefix_hit_rate"] == pytest.approx((n - replicas) * hit / (n * (T + own)),
                                                 rel=1e-12)
    assert s["prefill_tokens_saved"] == (n - replicas) * hit
    assert s["prefix_blocks_evicted"] == 0 and s["preemptions"] == 0
    first = req.sort_values("start_s").groupby("replica")["id"].first()
    assert (req.loc[req["id"].isin(first), "cached_tokens"] == 0).all()
    assert (req.loc[~req["id"].isin(first), "cached_tokens"] == hit).all()
    # conservation: the iterations prefilled the prompts less what the cache held
    assert r.iterations["prefill_tokens"].sum() == n * (T + own) - s["prefill_tokens_saved"]


def test_many_groups_hit_after_their_first_request_while_cached():
    """Zipf-popular prefixes with room for all of them: a request hits (its prefix's full blocks)
    exactly when a request of the same group was admitted to its replica before it."""
    r = _run(**{"workload.scheduler.prefix_caching": True, "workload.parallelism.replicas": 2,
                "workload.arrivals.prefix": {"groups": 30, "tokens": 700, "share": 0.8,
                                             "popularity": "zipf", "zipf_s": 1.2}})
    req = r.requests
    assert r.summary["prefix_blocks_evicted"] == 0
    prefix_id = {q.id: q.prefix_id for q in
                 _plan_requests(**{"workload.arrivals.prefix": {
                     "groups": 30, "tokens": 700, "share": 0.8, "popularity": "zipf",
                     "zipf_s": 1.2}})}
    req = req.assign(prefix_id=req["id"].map(prefix_id)).sort_values(["start_s", "id"])
    seen: set = set()
    for q in req.itertuples():
        key = (q.replica, q.prefix_id)
        want = 700 // 16 * 16 if q.prefix_id >= 0 and key in seen else 0
        assert q.cached_tokens == want, q
        if q.prefix_id >= 0:
            seen.add(key)


def _plan_requests(**changes) -> tuple[Request, ...]:
    sc = load_scenario(_scenario(**changes))
    return prepare(sc)[1].requests


# -- direction of sensitivity ---------------------------------------------------------------------

def test_ttft_falls_with_caching():
    off = _run(**{"workload.arrivals.prefix": {"tokens": 1000}})
    on = _run(**SYSTEM_PROMPT)
    for key in ("ttft_mean_s", "ttft_p50_s", "ttft_p99_s"):
        assert on.summary[key] < off.summary[key], key
    assert on.iterations["prefill_tokens"].sum() < off.iterations["prefill_tokens"].sum()
    # the shared prompt's blocks are held once, not once per sequence
    assert on.summary["kv_blocks_used_max"] < off.summary["kv_blocks_used_max"]


def test_headline_says_what_the_cache_saved():
    on, off = _run(**SYSTEM_PROMPT), _run()
    lines = headline(on.summary, on.config)
    assert (f"prefix cache: {on.summary['prefix_hit_rate']:.1%} of prompt tokens hit, "
            f"{on.summary['prefill_tokens_saved']:,} prefill tokens saved, 0 blocks evicted"
            in lines)
    assert not any(line.startswith("prefix cache") for line in headline(off.summary, off.config))


def test_more_cache_room_hits_more():
    small = _run(**TIGHT)
    large = _run(**{**TIGHT, "workload.scheduler.memory_fraction": 0.3})
    assert large.summary["prefix_hit_rate"] > small.summary["prefix_hit_rate"]
    assert large.summary["prefix_blocks_evicted"] < small.summary["prefix_blocks_evicted"]


# -- the cache module -----------------------------------------------------------------------------

def _queue(c: PrefixCache) -> list:
    """The free queue, head first: cached blocks by key, the others as None."""
    return [key if key[0] != -1 else None for key in c.queue]


def test_lru_evicts_least_recently_freed_and_a_sequence_tail_first():
    c = PrefixCache(block_tokens=4, blocks_total=10)
    a = Request(1, 0.0, 13, 1, prefix_id=0, prefix_tokens=12)  # 4 blocks: prefix (0, 0..2)
    b = Request(2, 0.0, 9, 1, prefix_id=1, prefix_tokens=8)    # 3 blocks: prefix (1, 0..1)
    assert c.lookup(a, 13, 4, free=10) == (0, 4)
    c.admit(a, 0, 13)
    assert c.lookup(b, 9, 3, free=6) == (0, 3)
    c.admit(b, 0, 9)
    c.trim(3)
    assert c.empty == 3 and c.blocks == 5 and c.referenced() == 5 and not c.queue
    assert c.release(a, 4) == 0 and c.release(b, 3) == 0
    # freed blocks join the queue behind the never-used ones, each sequence's tail first; the
    # last blocks (partial, not cached) as None
    assert _queue(c) == [None, (0, 2), (0, 1), (0, 0), None, (1, 1), (1, 0)]
    assert c.idle == 5 and c.referenced() == 0
    # a request without a prefix takes 5 of the 10 free blocks: the 3 never used, then the
    # head of the queue: (0, 2) is evicted
    other = Request(3, 0.0, 20, 1)
    assert c.lookup(other, 20, 5, free=10) == (0, 5)
    c.admit(other, 0, 20)
    assert c.trim(5) == 1 and c.evictions == 1 and c.empty == 0
    assert _queue(c) == [(0, 1), (0, 0), None, (1, 1), (1, 0)]
    again = Request(4, 0.0, 13, 1, prefix_id=0, prefix_tokens=12)
    assert c.match(again, 12) == (2, 2)  # (0, 2) is gone: blocks 0 and 1 hit, both idle
    # a hit takes the blocks back (touch); freed again, they are the most recently used
    d = Request(5, 0.0, 9, 1, prefix_id=1, prefix_tokens=8)
    assert c.lookup(d, 9, 3, free=5) == (8, 3)  # 2 idle hits + 1 new block
    c.admit(d, 2, 9)
    assert _queue(c) == [(0, 1), (0, 0), None]
    assert c.release(d, 3) == 0
    assert _queue(c) == [(0, 1), (0, 0), None, None, (1, 1), (1, 0)]
    assert c.trim(3) == 2 and _queue(c) == [None, (1, 1), (1, 0)]  # prefix 0 evicted
    assert c.match(again, 12) == (0, 0) and c.match(d, 8) == (2, 2)
    assert c.trim(5) == 0  # nothing taken since


def test_cache_references_hits_caps_and_duplicates():
    c = PrefixCache(block_tokens=4, blocks_total=100)
    r1 = Request(1, 0.0, 11, 1, prefix_id=7, prefix_tokens=10)
    c.admit(r1, 0, 4)  # chunked prefill: the first chunk holds block 0 only
    r2 = Request(2, 0.0, 11, 1, prefix_id=7, prefix_tokens=10)
    assert c.match(r2, 10) == (1, 0)
    c.register(r1, 11)  # the next chunk: block 1 (block 2 is not full: 10 prefix tokens)
    assert c.match(r2, 10) == (2, 0)
    assert c.match(r2, 7) == (1, 0)  # the sequence less its last token caps the hit
    assert c.match(Request(3, 0.0, 11, 1, prefix_id=7, prefix_tokens=3), 10) == (0, 0)
    assert c.match(Request(4, 0.0, 11, 1), 10) == (0, 0)  # no prefix, no hit
    c.admit(r2, 2, 11)
    assert c.refs == {(7, 0): 2, (7, 1): 2}
    assert c.release(r1, 3) == 2  # both prefix blocks still used by r2
    assert c.idle == 0 and c.release(r2, 3) == 0 and c.idle == 2
    # a block another sequence registered first stays the newcomer's own copy
    d = PrefixCache(block_tokens=4, blocks_total=100)
    q1 = Request(1, 0.0, 9, 1, prefix_id=0, prefix_tokens=8)
    q2 = Request(2, 0.0, 9, 1, prefix_id=0, prefix_tokens=8)
    d.admit(q1, 0, 4)
    d.admit(q2, 1, 9)   # hits block 0, registers block 1
    d.register(q1, 9)   # block 1 is q2's: q1 keeps a private copy
    assert d.refs == {(0, 0): 2, (0, 1): 1}
    assert d.release(q1, 3) == 1 and d.release(q2, 3) == 0
    d.admit(q2, 2, 9)
    with pytest.raises(ValueError, match="sequence 2 is already admitted"):
        d.admit(q2, 0, 9)
    with pytest.raises(ValueError, match="block_tokens=0 must be >= 1"):
        PrefixCache(0, 10)


def test_a_recomputed_sequence_finds_its_own_blocks():
    """Preempted to be recomputed, a sequence's own full blocks stay cached (vLLM hashes every
    full block); readmitted, it hits them after its shared prefix, unless evicted."""
    c = PrefixCache(block_tokens=4, blocks_total=100)
    q = Request(9, 0.0, 14, 20, prefix_id=3, prefix_tokens=8)
    c.admit(q, 0, 14)
    # preempted after 5 generated tokens: 14 + 4 tokens in its KV cache, 5 blocks
    assert c.release(q, 5, keep_tokens=18) == 0
    assert _queue(c) == [None, (-11, 3), (-11, 2), (3, 1), (3, 0)]
    assert c.match(q, 14 + 5 - 1) == (4, 4)  # 2 shared blocks, then 2 of its own
    c.admit(q, 4, 19)
    assert c.refs == {(3, 0): 1, (3, 1): 1} and c.blocks == 2  # its own blocks: private again
    # preempted again; then its shared prefix's second block alone is evicted (taken out by
    # hand: a break in the middle of its chain), stranding its own cached blocks
    assert c.release(q, 5, keep_tokens=18) == 0
    assert _queue(c) == [None, None, (-11, 3), (-11, 2), (3, 1), (3, 0)]
    del c.queue[(3, 1)], c.refs[(3, 1)]
    c.idle -= 1
    assert c.match(q, 18) == (1, 1)
    c.admit(q, 1, 19)
    assert c.release(q, 5, keep_tokens=18) == 0  # (-11, 2) is still cached: no second copy
    assert c.idle == len([k for k in c.queue if k[0] != -1]) == len(c.refs)


# -- arrivals -------------------------------------------------------------------------------------

def test_shared_prefixes_draws_share_and_popularity():
    reqs = open_loop("constant", rate_per_s=1.0, requests=20000, prompt=100, output=10,
                     rng=np.random.default_rng(0))
    out = shared_prefixes(reqs, {"groups": 5, "tokens": {"dist": "uniform", "low": 200,
                                                         "high": 400}, "share": 0.6,
                                 "popularity": "zipf", "zipf_s": 1.5},
                          np.random.default_rng(1))
    ids = np.array([q.prefix_id for q in out])
    assert (ids >= 0).mean() == pytest.approx(0.6, abs=0.02)
    p = np.arange(1, 6) ** -1.5
    freq = np.bincount(ids[ids >= 0], minlength=5) / (ids >= 0).sum()
    assert freq == pytest.approx(p / p.sum(), abs=0.02)
    lengths = {q.prefix_id: q.prefix_tokens for q in out if q.prefix_id >= 0}
    assert all(200 <= v <= 400 for v in lengths.values())  # one length per group
    for q, o in zip(reqs, out):
        assert o.prompt_tokens == q.prompt_tokens + o.prefix_tokens
        assert (o.arrival_s, o.output_tokens) == (q.arrival_s, q.output_tokens)
    again = shared_prefixes(reqs, {"groups": 5, "tokens": {"dist": "uniform", "low": 200,
                                                           "high": 400}, "share": 0.6,
                                   "popularity": "zipf", "zipf_s": 1.5},
                            np.random.default_rng(1))
    assert again == out
    uniform = shared_prefixes(reqs, {"groups": 4, "tokens": 50}, np.random.default_rng(2))
    freq = np.bincount([q.prefix_id for q in uniform], minlength=4) / len(uniform)
    assert freq == pytest.approx([0.25] * 4, abs=0.02)


def test_trace_prefix_columns(tmp_path):
    reqs = from_trace([0.0, 1.0, 2.0], [100, 200, 50], [5, 5, 5], prefix_id=[3, np.nan, 3],
                      prefix_tokens=[64, np.nan, 50])
    assert [(q.prefix_id, q.prefix_tokens) for q in reqs] == [(3, 64), (-1, 0), (3, 50)]
    # identical prompts: the last token is computed anyway (its logits), so the hit stops a
    # block short of a block-aligned prompt
    path = tmp_path / "same.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,prefix_id,prefix_tokens\n"
                    "0,64,4,0,64\n5,64,4,0,64\n")
    r = _run(**{"workload.scheduler.prefix_caching": True,
                "workload.arrivals": {"process": "trace", "trace": str(path)}})
    assert r.requests["cached_tokens"].tolist() == [0, 48]
    assert r.summary["prefix_hit_rate"] == 48 / 128


# -- pinned errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,match", [
    ({"workload.arrivals.prefix": {"tokens": 100, "share": 1.5}},
     r"workload\.arrivals\.prefix\.share: input should be less than or equal to 1 \(got 1\.5\)"),
    ({"workload.arrivals.prefix": {"tokens": 100, "share": -0.1}},
     r"workload\.arrivals\.prefix\.share: input should be greater than or equal to 0"),
    ({"workload.arrivals.prefix": {"tokens": 100, "groups": 0}},
     r"workload\.arrivals\.prefix\.groups: input should be greater than or equal to 1"),
    ({"workload.arrivals.prefix": {"share": 0.5}},
     r"workload\.arrivals\.prefix\.tokens: required field is missing"),
    ({"workload.arrivals.prefix": {"tokens": 100, "zipf_s": 2}},
     r"workload\.arrivals\.prefix: zipf_s=2 applies to popularity 'zipf' only, not 'uniform'"),
    ({"workload.arrivals.prefix": {"tokens": 100, "popularity": "zipf", "zipf_s": 0}},
     r"workload\.arrivals\.prefix\.zipf_s: input should be greater than 0"),
    ({"workload.arrivals.prefix": {"tokens": 100, "popularity": "pareto"}},
     r"workload\.arrivals\.prefix\.popularity: 'pareto' is not allowed; valid values: "
     r"uniform, zipf"),
    ({"workload.arrivals.prefix": {"tokens": 100, "fraction": 0.5}},
     r"workload\.arrivals\.prefix\.fraction.*unknown key 'fraction'"),
    ({"workload.scheduler.prefix_caching": True, "workload.scheduler.policy": "dynamic"},
     r"workload\.scheduler: prefix_caching caches an LLM's KV blocks; policy 'dynamic' serves "
     r"classic models"),
    ({"workload.arrivals": {"process": "trace", "trace": "x.csv",
                            "prefix": {"tokens": 100}}},
     r"workload\.arrivals: prefix is for generated arrivals; a trace gives its shared prefixes "
     r"as columns prefix_id, prefix_tokens"),
    ({"workload.model": {"preset": "resnet50"}, "workload.scheduler.policy": "dynamic",
      "workload.arrivals.prefix": {"tokens": 100}},
     r"workload\.arrivals\.prefix: shared prefixes are prompt tokens of an LLM"),
    ({"workload.arrivals.prefix": {"tokens": 4000}, "workload.scheduler.chunked_prefill": False},
     r"workload\.scheduler: a prompt of 4512 tokens exceeds max_batched_tokens=4096"),
])
def test_bad_prefix_input_is_refused(changes, match):
    with pytest.raises(hwsim.ScenarioError, match=match):
        _run(**changes)


@pytest.mark.parametrize("columns,match", [
    ("0,100,5,0,120", r"workload\.arrivals: prefix_tokens\[0\]=120 is longer than the prompt "
                      r"\(prompt_tokens\[0\]=100\); valid: 0 <= prefix_tokens <= prompt_tokens"),
    ("0,100,5,-2,10", r"prefix_id\[0\]=-2 must be an integer >= 0 \(or empty or -1"),
    ("0,100,5,1.5,10", r"prefix_id\[0\]=1\.5 must be an integer >= 0"),
    ("0,100,5,1,-3", r"prefix_tokens\[0\]=-3 must be an integer >= 0"),
    ("0,100,5,,10", r"prefix_tokens\[0\]=10 needs a prefix_id \(row 0 has none\)"),
])
def test_bad_trace_prefix_is_refused(tmp_path, columns, match):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,prefix_id,prefix_tokens\n"
                    + columns + "\n")
    with pytest.raises(hwsim.ScenarioError, match=match):
        _run(**{"workload.arrivals": {"process": "trace", "trace": str(path)}})


def test_trace_with_one_prefix_column_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,prefix_id\n0,100,5,1\n")
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.arrivals\.trace: request trace "
                       r".* has column prefix_id but not prefix_tokens"):
        _run(**{"workload.arrivals": {"process": "trace", "trace": str(path)}})
    with pytest.raises(ValueError, match="prefix_id and prefix_tokens go together"):
        from_trace([0.0], [10], [1], prefix_id=[0])


@pytest.mark.parametrize("spec,match", [
    ({"tokens": 10, "share": 2.0}, r"prefix share=2\.0 must be a number in \[0, 1\]"),
    ({"tokens": 10, "groups": 0}, r"prefix groups=0 must be an integer >= 1"),
    ({"groups": 2}, r"prefix needs tokens"),
    ({"tokens": 0}, r"prefix tokens: token count 0 must be a positive integer"),
    ({"tokens": 10, "popularity": "zipf", "zipf_s": -1.0}, r"prefix zipf_s=-1\.0 must be"),
    ({"tokens": 10, "zipf_s": 2.0}, r"zipf_s=2\.0 applies to popularity 'zipf' only"),
    ({"tokens": 10, "popularity": "hot"}, r"unknown prefix popularity 'hot'; valid: uniform, "
                                          r"zipf"),
    ({"tokens": 10, "size": 3}, r"unknown prefix field\(s\) 'size'; valid: tokens, groups"),
])
def test_shared_prefixes_pins_its_errors(spec, match):
    reqs = [Request(0, 0.0, 10, 1)]
    with pytest.raises(ValueError, match=match):
        shared_prefixes(reqs, spec, np.random.default_rng(0))
