"""Adapters that fail on purpose, to exercise the runner's error handling."""

from __future__ import annotations

from adapters.base import Adapter, Item, ModelUnavailable, Result


class EnvironmentFailure(Adapter):
    """Every batch hits an environment error (as a full disk or a lost device would)."""

    tasks = ("mesh",)

    def run_batch(self, items: list[Item]) -> list[Result | BaseException]:
        raise OSError(28, "No space left on device")


class MissingWeights(Adapter):
    tasks = ("mesh",)

    def load(self, device: str) -> None:
        raise ModelUnavailable("weights not found: put them in /models/x (pip install x)")
