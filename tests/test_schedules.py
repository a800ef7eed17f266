"""Pipeline schedules: orders, memory in flight, and the bubbles they really have."""

from __future__ import annotations

import pytest
import simpy

from hwsim.jobs.pipeline import run_pipeline
from hwsim.jobs.schedules import gpipe, in_flight, interleaved, one_f_one_b, schedule


def _step_time(units, v, tf, tb, comm=0.0):
    env = simpy.Environment()

    def run(stage, unit):
        return env.timeout((tf if unit[0] == "F" else tb) / v)

    def send(src, dst, unit):
        return env.timeout(comm) if comm else None

    done = run_pipeline(env, units, v, run, send)
    env.run(done)
    return env.now


@pytest.mark.parametrize("p,m", [(1, 1), (2, 4), (4, 8), (8, 8), (4, 32), (8, 3)])
@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
def test_plain_schedules_have_the_textbook_bubble(name, p, m):
    """(m + p - 1)(tf + tb): bubble fraction (p - 1) / (m + p - 1)."""
    tf, tb = 1.0, 2.0
    t = _step_time(schedule(name, p, m), 1, tf, tb)
    assert t == pytest.approx((m + p - 1) * (tf + tb))
    assert 1 - m * (tf + tb) / t == pytest.approx((p - 1) / (m + p - 1))


@pytest.mark.parametrize("p,m,v", [(2, 4, 2), (4, 8, 2), (4, 8, 4), (8, 16, 3)])
def test_interleaving_divides_the_bubble_by_v(p, m, v):
    """Each chunk costs (tf + tb) / v; the bubble shrinks to (p - 1)(tf + tb) / v."""
    tf, tb = 1.0, 2.0
    t = _step_time(interleaved(p, m, v), v, tf, tb)
    assert t == pytest.approx(m * (tf + tb) + (p - 1) * (tf + tb) / v)


def test_every_unit_runs_once_and_backward_follows_forward():
    for units in (gpipe(4, 6), one_f_one_b(4, 6), interleaved(4, 8, 2)):
        for stage in units:
            assert len(stage) == len(set(stage))
            seen = set()
            for phase, mb, c in stage:
                if phase == "B":
                    assert ("F", mb, c) in seen
                seen.add((phase, mb, c))


def test_1f1b_keeps_fewer_micro_batches_in_flight_than_gpipe():
    p, m = 4, 16
    assert [in_flight(s) for s in gpipe(p, m)] == [m] * p
    assert [in_flight(s) for s in one_f_one_b(p, m)] == [p - s for s in range(p)]


def test_communication_between_stages_lengthens_the_step():
    base = _step_time(one_f_one_b(4, 8), 1, 1.0, 2.0)
    slow = _step_time(one_f_one_b(4, 8), 1, 1.0, 2.0, comm=0.1)
    assert slow > base


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"multiple of pipeline stages\(=4\)"):
        interleaved(4, 6, 2)
    with pytest.raises(ValueError, match="unknown pipeline schedule 'zigzag'; valid: gpipe, 1f1b, interleaved"):
        schedule("zigzag", 2, 2)
