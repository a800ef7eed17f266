"""Streams run FIFO, pools account bytes, the recorder builds exact utilization."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from hwsim.engine import FlowNetwork, OutOfCapacity, Pool, Recorder, Stream
from hwsim.exceptions import InfeasibleError


def test_stream_runs_fifo_and_streams_overlap():
    env = simpy.Environment()
    rec = Recorder()
    comp, comm = Stream(env, "d/compute", rec), Stream(env, "d/comm", rec, kind="collective")
    log = []

    def job():
        a = comp.run(2.0, name="a")
        b = comp.run(1.0, name="b")
        c = comm.run(1.5, name="c")
        yield a
        log.append(("a", env.now))
        yield b
        log.append(("b", env.now))
        yield c
        log.append(("c", env.now))

    env.process(job())
    env.run()
    assert log == [("a", 2.0), ("b", 3.0), ("c", 3.0)]
    ev = rec.events_frame()
    assert list(ev["name"]) == ["c", "a", "b"]  # sorted by start, then end
    assert comp.busy_s == 3.0


def test_pool_reports_breakdown_when_full():
    rec = Recorder()
    p = Pool("gpu0/hbm", 80e9, rec)
    p.allocate(60e9, "weights")
    with pytest.raises(OutOfCapacity, match=r"does not fit: 93 GB needed of 80 GB \(weights 60 GB, activations 33 GB\)") as ei:
        p.allocate(33e9, "activations")
    assert isinstance(ei.value, InfeasibleError)
    assert p.used_bytes == 60e9  # nothing taken
    p.free(60e9, "weights")
    assert p.used_bytes == 0 and p.peak_bytes == 60e9
    with pytest.raises(ValueError, match="only 0"):
        p.free(1.0, "weights")


def test_utilization_is_exact_and_within_bounds():
    env = simpy.Environment()
    rec = Recorder()
    net = FlowNetwork(env, rec)
    net.add_channel("l", 10.0, "eth")
    s = Stream(env, "d/compute", rec)

    def job():
        yield net.transfer(10.0, ["l"])        # 0..1 full
        yield env.timeout(1.0)                 # 1..2 idle
        yield s.run(0.5)                       # 2..2.5 compute
        yield net.transfer(5.0, ["l"])         # 2.5..3 full

    env.process(job())
    env.run()
    u = rec.utilization_table(end_s=4.0, bin_s=1.0).to_pandas()
    link = u[u.resource == "l"].utilization.to_numpy()
    assert link == pytest.approx([1.0, 0.0, 0.5, 0.0])
    assert u[u.resource == "l"].bytes.sum() == pytest.approx(15.0)
    dev = u[u.resource == "d/compute"].utilization.to_numpy()
    assert dev == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert ((u.utilization >= 0) & (u.utilization <= 1)).all()
