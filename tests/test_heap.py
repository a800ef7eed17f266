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
