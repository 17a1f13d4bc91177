"""Pause Python's cyclic garbage collector around allocation-heavy, cycle-free work.

Loading a large inventory allocates millions of short-lived objects, which keeps triggering full
collections that find nothing to free (reference counting frees them). Pausing the collector for
the duration roughly halves loading and planning time for a 5,000-host inventory.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # What survived is long-lived data (the inventory, the plan): move it out of the young
        # generation so the next collection does not walk it all at once.
        gc.freeze()
        if was_enabled:
            gc.enable()
