"""What a process built while starting, taken out of the garbage collector's sight once it serves.

Python's collector walks every tracked object of a generation it collects. A loaded engine
process holds ~430,000 of them (the model's modules, torch, transformers) and the server ~110,000;
a full collection over them took 100-260 ms and 20-50 ms on the development machine, a stall of
the engine thread or of the event loop at whatever moment the allocation count trips it. None of
them will become garbage while the process lives, so they are frozen (`gc.freeze`): collections
then walk only what serving allocates.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect start-up's own garbage, then freeze what survives; returns how many objects the
    collector now skips."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
