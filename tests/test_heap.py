"""hwsim.heap.frozen_heap: what it freezes, when it unfreezes, and what it leaves alone."""

from __future__ import annotations

import gc

import pytest

from hwsim.heap import frozen_heap


@pytest.fixture(autouse=True)
def _clean_heap():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_blocks_freeze_what_exists_and_the_outermost_unfreezes():
    with frozen_heap():
        outer = gc.get_freeze_count()
        assert outer > 0
        made = [[] for _ in range(1000)]  # noqa: F841 - objects made inside the outer block
        with frozen_heap():
            assert gc.get_freeze_count() >= outer + 1000  # the inner block froze them too
        assert gc.get_freeze_count() >= outer + 1000  # still frozen: the outer block is open
    assert gc.get_freeze_count() == 0


def test_unfreezes_after_an_error():
    with pytest.raises(RuntimeError):
        with frozen_heap():
            with frozen_heap():
                raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_leaves_a_programs_own_freeze_and_a_disabled_collector_alone():
    gc.freeze()
    mine = gc.get_freeze_count()
    with frozen_heap():
        [[] for _ in range(100)]
        with frozen_heap():
            assert gc.get_freeze_count() == mine
    assert gc.get_freeze_count() == mine
    gc.unfreeze()
    gc.disable()
    try:
        with frozen_heap():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_a_paused_collector_resumes_for_good_at_the_first_block():
    """The command line's start-up (hwsim.cli.entry) pauses the collector; the first
    frozen_heap block (a simulation) turns it back on, and it stays on after the block."""
    import hwsim.heap as heap

    try:
        heap.pause_collection()
        assert not gc.isenabled()
        heap.pause_collection()  # again: nothing more
        with frozen_heap():
            assert gc.isenabled() and gc.get_freeze_count() > 0
        assert gc.isenabled() and gc.get_freeze_count() == 0
        with frozen_heap():
            assert gc.isenabled()
    finally:
        heap._paused = False
        gc.enable()


def test_pause_leaves_a_collector_that_is_off_alone():
    import hwsim.heap as heap

    gc.disable()
    try:
        heap.pause_collection()
        with frozen_heap():
            assert not gc.isenabled()  # the program's own choice: kept
        assert not gc.isenabled()
    finally:
        heap._paused = False
        gc.enable()
