"""Which model a runner works on next. Pure: demand in, decision out.

This is the one seam the VRAM planner replaces: batching by model starts here.
"""

from __future__ import annotations

from collections.abc import Iterable

from db.queue import ModelDemand


def choose_model(demand: Iterable[ModelDemand], resident: Iterable[str] = ()) -> str | None:
    """Stay on a loaded model while it has work (no reload); otherwise take the model
    whose queue is most urgent: highest priority first, then the oldest job."""
    demand = [d for d in demand if d.ready > 0]
    if not demand:
        return None
    most_urgent = min(demand, key=lambda d: (-d.top_priority, d.oldest_created_at, d.model))
    loaded = [d for d in demand if d.model in set(resident)]
    if loaded:
        best_loaded = min(loaded, key=lambda d: (-d.top_priority, d.oldest_created_at, d.model))
        # A more urgent priority elsewhere still wins; equal urgency does not pay a load.
        if best_loaded.top_priority >= most_urgent.top_priority:
            return best_loaded.model
    return most_urgent.model
