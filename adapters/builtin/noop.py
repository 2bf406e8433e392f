"""builtin-noop: a model that does no work, for queue benchmarks and smoke tests.

It measures the queue, not a model: every job succeeds with a manifest and no mesh.
``params.sleep_s`` makes each job take that long, to stand in for a slow model when
testing leases, crashes and shutdown.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from adapters.base import Adapter, Item, Result


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sleep_s: float = Field(0.0, ge=0.0, le=3600.0)


class NoopAdapter(Adapter):
    accepts = ("image", "prompt", "mesh")
    images_used = 0  # none: it does no work
    Params = NoopParams
    version = "1"

    def run_one(self, item: Item) -> Result:
        sleep_s = NoopParams.model_validate(item.params).sleep_s
        if sleep_s:
            time.sleep(sleep_s)
        return Result(info={"slept_s": sleep_s})
