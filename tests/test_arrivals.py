"""Request arrivals: the statistics of each arrival process and token distribution (seeded,
within sampling error), determinism, traces, and the errors bad input gets."""

from __future__ import annotations

import numpy as np
import pytest

from hwsim.workloads import Request, from_trace, open_loop, token_sampler

N = 20_000


def gaps(reqs):
    return np.diff([r.arrival_s for r in reqs])


def cv(x):
    return float(np.std(x) / np.mean(x))


# -- arrival processes ---------------------------------------------------------------------------
def test_poisson_gaps_are_exponential_with_mean_one_over_rate():
    rate = 4.0
    reqs = open_loop("poisson", rate_per_s=rate, requests=N + 1, prompt=100, output=10,
                     rng=np.random.default_rng(1))
    g = gaps(reqs)
    assert len(g) == N and (g >= 0).all()
    # the mean of N exponential gaps has standard error (1/rate)/sqrt(N) = 0.7%: 4 sigma
    assert g.mean() == pytest.approx(1 / rate, rel=4 / np.sqrt(N))
    assert cv(g) == pytest.approx(1.0, abs=0.03)
    # memoryless: P(gap > mean) = 1/e; binomial standard error 0.34%
    assert (g > 1 / rate).mean() == pytest.approx(np.exp(-1), abs=0.014)
    # counts in 1-second windows are Poisson: variance = mean (dispersion index 1)
    counts = np.bincount(np.array([r.arrival_s for r in reqs]).astype(int))[:-1]
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("want", [0.25, 0.5, 2.0, 4.0])
def test_gamma_gaps_have_the_requested_mean_and_coefficient_of_variation(want):
    rate = 10.0
    reqs = open_loop("gamma", rate_per_s=rate, requests=N + 1, prompt=100, output=10,
                     rng=np.random.default_rng(2), cv=want)
    g = gaps(reqs)
    assert g.mean() == pytest.approx(1 / rate, rel=4 * want / np.sqrt(N))
    # the sample CV of heavy-tailed gaps (cv 4: shape 1/16) converges slowly: 10%
    assert cv(g) == pytest.approx(want, rel=0.03 if want <= 1 else 0.10)


def test_gamma_with_cv_one_is_poisson_in_distribution():
    g = gaps(open_loop("gamma", rate_per_s=2.0, requests=N + 1, prompt=1, output=1,
                       rng=np.random.default_rng(3)))
    assert cv(g) == pytest.approx(1.0, abs=0.03)
    assert (g > 0.5).mean() == pytest.approx(np.exp(-1), abs=0.014)


def test_constant_gaps_are_exact_and_the_first_request_arrives_at_start():
    reqs = open_loop("constant", rate_per_s=8.0, requests=1000, prompt=512, output=64,
                     rng=np.random.default_rng(0), start_s=3.0)
    t = np.array([r.arrival_s for r in reqs])
    assert t[0] == 3.0
    np.testing.assert_allclose(np.diff(t), 0.125, rtol=1e-12)
    np.testing.assert_allclose(t, 3.0 + 0.125 * np.arange(1000), rtol=1e-12)
    assert [r.id for r in reqs] == list(range(1000))
    assert all(r.prompt_tokens == 512 and r.output_tokens == 64 for r in reqs)
    for proc in ("poisson", "gamma"):
        first = open_loop(proc, rate_per_s=1.0, requests=5, prompt=1, output=1,
                          rng=np.random.default_rng(0), start_s=7.5)[0]
        assert first.arrival_s == 7.5


def test_same_seed_same_requests_other_seed_other_requests():
    def run(seed, process="gamma"):
        return open_loop(process, rate_per_s=3.0, requests=500, rng=np.random.default_rng(seed),
                         prompt={"dist": "lognormal", "median": 700, "sigma": 0.8},
                         output={"dist": "uniform", "low": 1, "high": 400},
                         cv=2.0 if process == "gamma" else 1.0)
    assert run(42) == run(42)
    assert run(42, "poisson") == run(42, "poisson")
    assert run(42) != run(43)
    reqs = run(42)
    assert all(isinstance(r, Request) for r in reqs)
    assert all(type(r.prompt_tokens) is int and type(r.output_tokens) is int
               and type(r.arrival_s) is float for r in reqs)
    times = [r.arrival_s for r in reqs]
    assert times == sorted(times)


def test_changing_the_output_distribution_keeps_arrivals_and_prompts():
    a = open_loop("poisson", rate_per_s=1.0, requests=50, prompt={"dist": "normal", "mean": 300,
                  "std": 50}, output=10, rng=np.random.default_rng(5))
    b = open_loop("poisson", rate_per_s=1.0, requests=50, prompt={"dist": "normal", "mean": 300,
                  "std": 50}, output={"dist": "uniform", "low": 5, "high": 9},
                  rng=np.random.default_rng(5))
    assert [(r.arrival_s, r.prompt_tokens) for r in a] == [(r.arrival_s, r.prompt_tokens)
                                                          for r in b]


# -- token distributions -------------------------------------------------------------------------
def sample(spec, n=N, seed=0):
    x = token_sampler(spec, np.random.default_rng(seed))(n)
    assert x.dtype == np.int64 and x.shape == (n,) and (x >= 1).all()
    return x


def test_constant_tokens():
    assert (sample(128) == 128).all()
    assert token_sampler(7, np.random.default_rng(0))(0).shape == (0,)


def test_uniform_tokens_are_inclusive_integers_with_the_right_mean():
    x = sample({"dist": "uniform", "low": 10, "high": 20})
    assert x.min() == 10 and x.max() == 20
    assert set(np.unique(x)) == set(range(10, 21))
    assert x.mean() == pytest.approx(15.0, abs=4 * np.sqrt(10) / np.sqrt(N))
    assert (sample({"dist": "uniform", "low": 5, "high": 5}) == 5).all()


def test_normal_tokens_are_rounded_and_clipped_to_one():
    x = sample({"dist": "normal", "mean": 1000, "std": 100})
    assert x.mean() == pytest.approx(1000, abs=4 * 100 / np.sqrt(N))
    assert x.std() == pytest.approx(100, rel=0.03)
    # mean 2, std 5: draws below 1.5 round to 1 or less and become 1: P(z < -0.1) = 0.4602
    y = sample({"dist": "normal", "mean": 2, "std": 5})
    assert y.min() == 1
    assert (y == 1).mean() == pytest.approx(0.4602, abs=0.015)
    assert (sample({"dist": "normal", "mean": 3.4, "std": 0}) == 3).all()


def test_lognormal_tokens_have_the_requested_median_and_log_sigma():
    x = sample({"dist": "lognormal", "median": 800, "sigma": 0.5})
    assert np.median(x) == pytest.approx(800, rel=0.02)
    assert np.log(x).std() == pytest.approx(0.5, rel=0.03)
    assert x.mean() == pytest.approx(800 * np.exp(0.5 ** 2 / 2), rel=0.02)
    assert sample({"dist": "lognormal", "median": 0.2, "sigma": 0.1}).max() == 1  # >= 1


def test_choice_tokens_come_from_the_values_uniformly():
    values = [17, 230, 230, 4096]
    x = sample({"dist": "choice", "values": values})
    assert set(np.unique(x)) == {17, 230, 4096}
    assert (x == 230).mean() == pytest.approx(0.5, abs=0.015)
    assert (x == 17).mean() == pytest.approx(0.25, abs=0.015)
    assert (sample({"dist": "choice", "values": np.array([9])}) == 9).all()


# -- traces --------------------------------------------------------------------------------------
def test_from_trace_keeps_rows_and_accepts_integral_floats():
    reqs = from_trace([0.0, 0.5, 0.5, 2.25], np.array([10.0, 20.0, 30.0, 40.0]), [1, 2, 3, 4])
    assert reqs == [Request(0, 0.0, 10, 1), Request(1, 0.5, 20, 2), Request(2, 0.5, 30, 3),
                    Request(3, 2.25, 40, 4)]
    assert type(reqs[0].prompt_tokens) is int and type(reqs[0].arrival_s) is float


@pytest.mark.parametrize("args, match", [
    (([0, 2, 1], [1, 1, 1], [1, 1, 1]),
     r"arrival_s must be sorted \(non-decreasing\): arrival_s\[2\]=1 < arrival_s\[1\]=2"),
    (([-1, 2], [1, 1], [1, 1]), r"arrival_s\[0\]=-1 must be a finite time >= 0"),
    (([0, float("nan")], [1, 1], [1, 1]), r"arrival_s\[1\]=nan must be a finite time"),
    (([0, 1], [1, 0], [1, 1]), r"prompt_tokens\[1\]=0 must be a positive integer"),
    (([0, 1], [1, 2], [1.5, 1]), r"output_tokens\[0\]=1.5 must be a positive integer"),
    (([0, 1], [1, 2], [1]), r"trace columns differ in length: arrival_s=2, prompt_tokens=2, "
                            r"output_tokens=1"),
    (([], [], []), r"trace has no requests"),
    ((["a"], [1], [1]), r"trace column arrival_s must hold numbers"),
])
def test_from_trace_errors_name_the_column_and_row(args, match):
    with pytest.raises(ValueError, match=match):
        from_trace(*args)


# -- errors --------------------------------------------------------------------------------------
RNG = np.random.default_rng(0)


@pytest.mark.parametrize("spec, match", [
    ({"dist": "poisson"}, r"^unknown dist 'poisson'; valid: uniform, normal, lognormal, choice$"),
    ({"low": 1}, r"^unknown dist None; valid: uniform"),
    ({"dist": "uniform", "low": 1, "hi": 5},
     r"^unknown field\(s\) 'hi' for dist 'uniform'; valid: low, high$"),
    ({"dist": "normal", "mean": 5}, r"dist 'normal' needs mean, std; missing std"),
    ({"dist": "uniform", "low": 5, "high": 4}, r"low=5, high=4 must be integers with 1 <= low"),
    ({"dist": "uniform", "low": 0, "high": 4}, r"1 <= low <= high"),
    ({"dist": "uniform", "low": 1.5, "high": 4}, r"must be integers"),
    ({"dist": "normal", "mean": -1, "std": 1}, r"normal: mean=-1 must be a number > 0"),
    ({"dist": "normal", "mean": 10, "std": -1}, r"normal: std=-1 must be a number >= 0"),
    ({"dist": "lognormal", "median": 0, "sigma": 1}, r"lognormal: median=0 must be a number > 0"),
    ({"dist": "lognormal", "median": 5, "sigma": float("inf")}, r"sigma=inf must be a number"),
    ({"dist": "choice", "values": []}, r"choice: values=\[\] must be a non-empty list"),
    ({"dist": "choice", "values": [3, 0]}, r"choice: values\[1\]=0 must be a positive integer"),
    ({"dist": "choice", "values": "123"}, r"must be a non-empty list"),
    (0, r"token count 0 must be a positive integer"),
    (True, r"must be a positive integer or a mapping"),
    (2.5, r"must be a positive integer or a mapping"),
])
def test_token_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        token_sampler(spec, RNG)


def test_sample_count_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match=r"sample count n=-1 must be an integer >= 0"):
        token_sampler(5, RNG)(-1)


@pytest.mark.parametrize("process, kw, match", [
    ("bursty", {}, r"^unknown arrival process 'bursty'; valid: poisson, gamma, constant$"),
    ("poisson", dict(rate_per_s=0), r"^rate_per_s=0 must be > 0"),
    ("poisson", dict(rate_per_s=-2.0), r"^rate_per_s=-2.0 must be > 0"),
    ("poisson", dict(rate_per_s=float("nan")), r"^rate_per_s=nan must be > 0"),
    ("poisson", dict(requests=0), r"^requests=0 must be an integer >= 1"),
    ("poisson", dict(requests=10.0), r"^requests=10.0 must be an integer >= 1"),
    ("poisson", dict(start_s=-1), r"^start_s=-1 must be a number >= 0"),
    ("gamma", dict(cv=0), r"^cv=0 must be a number > 0"),
    ("poisson", dict(cv=2.0), r"^cv=2.0 applies to process 'gamma' only"),
    ("constant", dict(cv=0.5), r"^cv=0.5 applies to process 'gamma' only"),
    ("poisson", dict(prompt={"dist": "zipf"}), r"^unknown dist 'zipf'"),
])
def test_open_loop_errors(process, kw, match):
    args = {**dict(rate_per_s=1.0, requests=10, prompt=10, output=10, rng=RNG), **kw}
    with pytest.raises(ValueError, match=match):
        open_loop(process, **args)
