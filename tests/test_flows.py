"""Max-min fair flows: hand-computed cases, a brute-force reference, invariants."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.engine import FlowNetwork, Recorder


def _net(caps: dict[str, float], recorder: Recorder | None = None):
    env = simpy.Environment()
    net = FlowNetwork(env, recorder)
    for cid, cap in caps.items():
        net.add_channel(cid, cap, "test")
    return env, net


def _run(env, net, flows):
    """flows: list of (start_s, size, channels, kwargs). Returns finish times."""
    ends = [None] * len(flows)

    def starter(i, start, size, chans, kw):
        yield env.timeout(start)
        f = yield net.transfer(size, chans, **kw)
        ends[i] = env.now
        assert f.end_s == env.now

    for i, (start, size, chans, kw) in enumerate(flows):
        env.process(starter(i, start, size, chans, kw))
    env.run()
    return ends


def test_single_flow_takes_size_over_bandwidth_plus_latency():
    env, net = _net({"l": 25e9})
    ends = _run(env, net, [(0.0, 1e9, ["l"], {"latency_s": 2e-6})])
    assert ends[0] == pytest.approx(1e9 / 25e9 + 2e-6, rel=1e-12)


def test_two_equal_flows_share_a_link_equally():
    env, net = _net({"l": 10.0})
    ends = _run(env, net, [(0, 30.0, ["l"], {}), (0, 30.0, ["l"], {})])
    # each gets B/2 = 5 bytes/s
    assert ends == [pytest.approx(6.0), pytest.approx(6.0)]


def test_three_flows_over_two_links_of_different_capacity():
    """A (10) carries f1, f2; B (4) carries f2, f3. B is the bottleneck of f2 and f3 (2 each);
    f1 takes what f2 leaves on A (8). f2 and f3 end at t=10, then f1 runs alone at 10."""
    env, net = _net({"A": 10.0, "B": 4.0})
    ends = _run(env, net, [(0, 100.0, ["A"], {}), (0, 20.0, ["A", "B"], {}),
                           (0, 20.0, ["B"], {})])
    assert ends[1] == pytest.approx(10.0)
    assert ends[2] == pytest.approx(10.0)
    assert ends[0] == pytest.approx(10.0 + (100.0 - 80.0) / 10.0)


def test_a_finishing_flow_frees_bandwidth_at_that_instant():
    env, net = _net({"l": 10.0})
    ends = _run(env, net, [(0, 10.0, ["l"], {}), (0, 30.0, ["l"], {})])
    assert ends[0] == pytest.approx(2.0)  # 5 B/s each
    assert ends[1] == pytest.approx(2.0 + 20.0 / 10.0)


def test_a_flow_limited_elsewhere_leaves_its_share_to_the_rest():
    env, net = _net({"A": 10.0, "C": 2.0})
    rec_rates = {}

    def probe():
        yield env.timeout(0.5)
        rec_rates.update({f.id: f.rate for f in net._active})

    env.process(probe())
    ends = _run(env, net, [(0, 80.0, ["A"], {}), (0, 20.0, ["A", "C"], {})])
    assert sorted(rec_rates.values()) == [pytest.approx(2.0), pytest.approx(8.0)]
    assert ends[0] == pytest.approx(10.0)
    assert ends[1] == pytest.approx(10.0)


def test_a_late_arrival_slows_the_running_flow():
    env, net = _net({"l": 10.0})
    ends = _run(env, net, [(0, 40.0, ["l"], {}), (2.0, 10.0, ["l"], {})])
    # 0..2: f0 alone (20 B); 2..4: 5 B/s each, f1 done at 4; f0 has 10 left at 10 B/s -> 5
    assert ends[1] == pytest.approx(4.0)
    assert ends[0] == pytest.approx(5.0)


def test_coefficients_and_max_rate():
    env, net = _net({"disk": 12.0})
    ends = _run(env, net, [(0, 40.0, ["disk"], {"coefficients": {"disk": 2.0}}), (0, 40.0, ["disk"], {}),
                           (0, 4.0, ["disk"], {"max_rate": 1.0})])
    # capped flow at 1; the rest: 2x + x = 11 -> x = 11/3 each
    assert ends[2] == pytest.approx(4.0)
    x = 11.0 / 3.0
    t1 = 4.0
    left = 40.0 - x * t1
    # after t=4: 2x + x = 12 -> 4 each
    assert ends[0] == pytest.approx(t1 + left / 4.0)


def test_zero_size_and_pure_latency_flows():
    env, net = _net({"l": 1.0})
    ends = _run(env, net, [(1.0, 0.0, ["l"], {"latency_s": 0.5}), (0, 5.0, [], {"latency_s": 0.25})])
    assert ends == [pytest.approx(1.5), pytest.approx(0.25)]


def test_bad_arguments_are_pinned():
    env, net = _net({"l": 1.0})
    with pytest.raises(ValueError, match=r"capacity_bytes_per_s\(=0\) must be > 0"):
        net.add_channel("x", 0)
    with pytest.raises(ValueError, match=r"unknown channel 'nope'"):
        net.transfer(1.0, ["nope"])
    with pytest.raises(ValueError, match=r"size_bytes\(=-1\) must be >= 0"):
        net.transfer(-1, ["l"])


def test_flows_starting_at_one_instant_share_one_recomputation():
    env, net = _net({"shared": 50.0, **{f"c{i}": 1.0 for i in range(50)}})
    ends = _run(env, net, [(0, 1.0, ["shared", f"c{i}"], {}) for i in range(50)])
    # the first starts alone (no solver); one recomputation at t=0 places the other 49; all end
    # together at t=1, leaving no flow whose rate could change: no recomputation then
    assert ends == [pytest.approx(1.0)] * 50
    assert net.recomputations == 1
    assert net.alone == 1


def test_flows_alone_on_their_channels_skip_the_solver():
    env, net = _net({f"c{i}": 1.0 + i for i in range(50)})
    ends = _run(env, net, [(0, 10.0, [f"c{i}"], {}) for i in range(50)])
    assert ends == [pytest.approx(10.0 / (1.0 + i), rel=1e-15) for i in range(50)]
    assert net.recomputations == 0
    assert net.alone == 50


# -- brute-force reference ----------------------------------------------------------------------

def _maxmin(caps, flows):
    """Global progressive filling. flows: list of (dict channel->coef, max_rate)."""
    rates = [None] * len(flows)
    residual = dict(caps)
    while any(r is None for r in rates):
        best = np.inf
        for c in caps:
            w = sum(f[0].get(c, 0.0) for i, f in enumerate(flows) if rates[i] is None)
            if w > 0:
                best = min(best, residual[c] / w)
        for i, f in enumerate(flows):
            if rates[i] is None and f[1] is not None:
                best = min(best, f[1])
        tight = set()
        for c in caps:
            w = sum(f[0].get(c, 0.0) for i, f in enumerate(flows) if rates[i] is None)
            if w > 0 and residual[c] / w <= best * (1 + 1e-12):
                tight.add(c)
        for i, f in enumerate(flows):
            if rates[i] is None and (set(f[0]) & tight or (f[1] is not None and f[1] <= best * (1 + 1e-12))):
                rates[i] = best
                for c, a in f[0].items():
                    residual[c] -= a * best
    return rates


def _reference(caps, specs):
    """Event-by-event fluid simulation with a global recomputation at every event."""
    t = 0.0
    pending = sorted(range(len(specs)), key=lambda i: specs[i][0])
    active = {}
    ends = [None] * len(specs)
    while pending or active:
        ids = list(active)
        rates = _maxmin(caps, [(specs[i][2], specs[i][3]) for i in ids]) if ids else []
        t_fin = min((active[i] / r for i, r in zip(ids, rates)), default=np.inf)
        t_arr = specs[pending[0]][0] - t if pending else np.inf
        dt = min(t_fin, t_arr)
        for i, r in zip(ids, rates):
            active[i] -= r * dt
        t += dt
        for i in ids:
            if active[i] <= 1e-9 * specs[i][1]:
                ends[i] = t
                del active[i]
        while pending and specs[pending[0]][0] <= t + 1e-15:
            i = pending.pop(0)
            active[i] = specs[i][1]
    return ends


@st.composite
def _instances(draw):
    nch = draw(st.integers(1, 5))
    caps = {f"c{i}": draw(st.floats(1.0, 20.0)) for i in range(nch)}
    nfl = draw(st.integers(1, 7))
    specs = []
    for _ in range(nfl):
        chans = draw(st.lists(st.sampled_from(sorted(caps)), min_size=1, max_size=nch, unique=True))
        coefs = {c: draw(st.sampled_from([1.0, 1.0, 2.0, 0.5])) for c in chans}
        cap = draw(st.one_of(st.none(), st.floats(0.5, 10.0)))
        specs.append((draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5])), draw(st.floats(1.0, 50.0)),
                      coefs, cap))
    return caps, specs


@settings(max_examples=300, deadline=None)
@given(_instances())
def test_incremental_recomputation_equals_global_progressive_filling(inst):
    caps, specs = inst
    env, net = _net(caps)
    kw = [{"coefficients": s[2], **({"max_rate": s[3]} if s[3] is not None else {})} for s in specs]
    ends = _run(env, net, [(s[0], s[1], list(s[2]), k) for s, k in zip(specs, kw)])
    ref = _reference(caps, specs)
    assert ends == pytest.approx(ref, rel=1e-6, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(_instances())
def test_bytes_are_conserved_and_loads_stay_within_capacity(inst):
    caps, specs = inst
    rec = Recorder()
    env, net = _net(caps, rec)
    _run(env, net, [(s[0], s[1], list(s[2]), {"coefficients": s[2]}) for s in specs])
    carried = {c: 0.0 for c in caps}
    last = {}
    for t, c, load in rec.levels:
        assert load <= caps[c] * (1 + 1e-9)
        assert load >= -1e-9
        if c in last:
            t0, l0 = last[c]
            assert t >= t0
            carried[c] += l0 * (t - t0)
        last[c] = (t, load)
    for c in caps:
        expected = sum(s[1] * s[2][c] for s in specs if c in s[2])
        assert carried[c] == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert last.get(c, (0, 0.0))[1] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_local_repair_equals_global_filling_on_larger_random_networks(seed):
    """Dozens of flows over a shared two-level network, arriving over time, with coefficients
    and caps: finish times agree with the brute-force global reference."""
    rng = np.random.default_rng(seed)
    caps = {f"c{i}": float(rng.choice([4.0, 8.0, 10.0, 25.0])) for i in range(14)}
    names = sorted(caps)
    specs = []
    for _ in range(int(rng.integers(20, 40))):
        k = int(rng.integers(1, 5))
        chans = list(rng.choice(names, size=k, replace=False))
        coefs = {c: float(rng.choice([1.0, 1.0, 1.0, 2.0])) for c in chans}
        cap = float(rng.uniform(1, 6)) if rng.random() < 0.15 else None
        specs.append((float(rng.choice([0.0, 0.0, 0.3, 1.0, 1.7, 2.2])),
                      float(rng.uniform(1, 40)), coefs, cap))
    env, net = _net(caps)
    kw = [{"coefficients": s[2], **({"max_rate": s[3]} if s[3] is not None else {})} for s in specs]
    ends = _run(env, net, [(s[0], s[1], list(s[2]), k) for s, k in zip(specs, kw)])
    assert ends == pytest.approx(_reference(caps, specs), rel=1e-6, abs=1e-9)


# -- the solver's shortcuts: flows alone on their path, departures that free nobody, groups --------

def _settled_rates_match_global_filling(env, net, caps):
    """Step *env* to its end; at the end of every instant (nothing left to run at it and no
    recomputation pending) the rates of the active flows equal a global progressive filling."""
    checked = 0
    while True:
        try:
            env.step()
        except simpy.core.EmptySchedule:
            return checked
        if env.peek() <= env.now or net._recompute_pending:
            continue
        flows = sorted(net._active, key=lambda f: f.id)
        if not flows:
            continue
        ref = _maxmin(caps, [({ch.id: c for ch, c in f.channels}, f.max_rate) for f in flows])
        assert [f.rate for f in flows] == pytest.approx(ref, rel=1e-9)
        for ch in net.channels.values():
            assert ch.load == pytest.approx(sum(c * f.rate for f, c in ch.flows.items()),
                                            rel=1e-9, abs=1e-9)
        checked += 1


@settings(max_examples=200, deadline=None)
@given(_instances(), st.booleans())
def test_rates_after_every_instant_equal_a_global_recomputation(inst, grouped):
    """Whatever path set them (alone, local repair, departures that skip the solver), the rates
    of the active flows at the end of every instant are the global max-min fair ones; started
    one by one or as groups of one instant (``transfer_all``)."""
    caps, specs = inst
    env, net = _net(caps)
    by_start: dict[float, list] = {}
    for s in specs:
        by_start.setdefault(s[0], []).append(s)

    def starter(t, group):
        yield env.timeout(t)
        if grouped and all(s[3] is None for s in group):
            yield net.transfer_all([(s[1], list(s[2]), s[2], 0.0, "r", 0, "c") for s in group])
        else:
            yield env.all_of([net.transfer(s[1], list(s[2]), coefficients=s[2], max_rate=s[3])
                              for s in group])

    for t, group in by_start.items():
        env.process(starter(t, group))
    assert _settled_rates_match_global_filling(env, net, caps) >= 1
    assert net.flows_finished == len(specs) and not net.active_flows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1.0, 1e12), min_size=1, max_size=6),
       st.lists(st.sampled_from([1.0, 0.5, 2.0, 1.25]), min_size=6, max_size=6),
       st.one_of(st.none(), st.floats(0.5, 1e12)), st.floats(1.0, 1e12),
       st.floats(0.0, 1e-3))
def test_a_flow_alone_on_its_path_gets_the_paths_bottleneck_without_the_solver(
        caps, coefs, cap, size, latency):
    names = [f"c{i}" for i in range(len(caps))]
    env, net = _net(dict(zip(names, caps)))
    co = dict(zip(names, coefs))
    done = net.transfer(size, names, latency, coefficients=co, max_rate=cap)
    rate = min([c / co[n] for n, c in zip(names, caps)] + ([cap] if cap is not None else []))
    (flow,) = net._active
    assert flow.rate == rate  # exactly: what progressive filling gives a lone flow
    env.run()
    f = done.value
    assert f.end_s == pytest.approx(size / rate + latency, rel=1e-12)
    assert net.recomputations == 0 and net.alone == 1


def test_a_lone_flow_is_repaired_when_another_joins_its_path():
    env, net = _net({"a": 10.0, "b": 4.0})
    ends = _run(env, net, [(0, 40.0, ["a", "b"], {}), (1.0, 12.0, ["a"], {})])
    # f0 alone at 4 (b); f1 joins a at t=1 and takes the 6 f0 leaves: ends at 3; f0 at 10
    assert ends == [pytest.approx(10.0), pytest.approx(3.0)]
    # one recomputation when f1 joins, one when it leaves a saturated channel f0 still uses
    assert net.alone == 1 and net.recomputations == 2


@settings(max_examples=60, deadline=None)
@given(_instances())
def test_groups_conserve_bytes_and_end_with_their_last_flow(inst):
    caps, specs = inst
    rec = Recorder()
    env, net = _net(caps, rec)
    got = {}

    def starter(t, i):
        yield env.timeout(t)
        group = [s for s in specs if s[0] == t]
        start = env.now
        flows = yield net.transfer_all([(s[1], list(s[2]), s[2], 0.0, f"g{i}", i, "c")
                                        for s in group] + [(0.0, [], None, 0.0, "z", i, "c")])
        got[i] = (start, env.now, flows)

    starts = sorted({s[0] for s in specs})
    for i, t in enumerate(starts):
        env.process(starter(t, i))
    env.run()
    for i, t in enumerate(starts):
        start, end, flows = got[i]
        group = [s for s in specs if s[0] == t]
        assert [f.size for f in flows] == [s[1] for s in group] + [0.0]
        assert end == max(f.end_s for f in flows)
        assert all(f.start_s == start == t for f in flows)
    carried = {c: 0.0 for c in caps}
    last = {}
    for t, c, load in rec.levels:
        assert load <= caps[c] * (1 + 1e-9)
        if c in last:
            carried[c] += last[c][1] * (t - last[c][0])
        last[c] = (t, load)
    for c in caps:
        expected = sum(s[1] * s[2][c] for s in specs if c in s[2])
        assert carried[c] == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert last.get(c, (0, 0.0))[1] == pytest.approx(0.0, abs=1e-9)
    assert len(rec.events) == len(specs) + len(starts)


def test_a_groups_callback_runs_once_its_last_flow_arrives_and_may_start_flows():
    env, net = _net({"a": 2.0, "b": 1.0})
    seen = []

    def then(flows):
        seen.append((env.now, [f.end_s for f in flows]))
        if len(seen) == 2:  # start the next group from inside the engine's wake-up
            net.transfer_all([(1.0, ["a"], None, 0.0, "r", 0, "c")], then=then)

    assert net.transfer_all([(2.0, ["a"], None, 0.0, "r", 0, "c"),
                             (2.0, ["b"], None, 0.0, "r", 1, "c")], then=then) is None
    net.transfer_all([], then=lambda flows: seen.append(("empty", flows)))
    env.run()
    assert seen == [("empty", []), (2.0, [1.0, 2.0]), (2.5, [2.5])]
