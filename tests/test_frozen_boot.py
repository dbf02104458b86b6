"""A worker process freezes what it loaded at boot out of the garbage collector's sight."""

from __future__ import annotations

import gc
import weakref

from workers.middleware import YOUNG_THRESHOLD, FrozenBoot


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_boot_objects_are_frozen_and_garbage_is_collected_first() -> None:
    # Given a live object and an unreachable cycle, both tracked by the collector
    kept = [_Node()]
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    assert any(o is kept for o in gc.get_objects())
    thresholds = gc.get_threshold()
    try:
        # When the worker boots
        FrozenBoot().before_worker_boot(broker=None, worker=None)

        # Then the cycle was collected, not frozen for ever, and the live object is
        # frozen: no collection walks it again
        assert gone() is None
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *thresholds[1:])

        # and what is made afterwards is collected as before
        later = _Node()
        later_ref = weakref.ref(later)
        del later
        gc.collect()
        assert later_ref() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert any(o is kept for o in gc.get_objects())
