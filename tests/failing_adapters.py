"""Adapters that fail on purpose, to exercise the runner's error handling, and one that
records what the runner hands it."""

from __future__ import annotations

from collections.abc import Callable

from adapters.base import Adapter, Item, ModelUnavailable, Result


class EnvironmentFailure(Adapter):
    """Every batch hits an environment error (as a full disk or a lost device would)."""

    def run_batch(self, items: list[Item]) -> list[Result | BaseException]:
        raise OSError(28, "No space left on device")


class MissingWeights(Adapter):
    def load(self, device: str) -> None:
        raise ModelUnavailable("weights not found: put them in /models/x (pip install x)")


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the runner recognises by name."""


class NeedsTheWholeGpu(Adapter):
    """Runs out of GPU memory while any other model shares its device (as a model that
    needs nearly all of a GPU would); alone it succeeds. The test tells it what else is
    loaded through ``others``."""

    accepts = ("image", "prompt", "mesh")
    others: Callable[[], list[str]] = staticmethod(lambda: [])

    def run_batch(self, items: list[Item]) -> list[Result | BaseException]:
        if NeedsTheWholeGpu.others():
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [Result(info={"alone": True}) for _ in items]


class AlwaysOutOfMemory(Adapter):
    accepts = ("image", "prompt", "mesh")

    def run_batch(self, items: list[Item]) -> list[Result | BaseException]:
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


class Recorder(Adapter):
    """Succeeds, and remembers every batch it was given (the items themselves), so a
    test can see how the runner read and grouped the inputs."""

    accepts = ("image", "prompt", "mesh")
    images_used: int | None = 1  # type: ignore[assignment]
    batches: list[list[Item]] = []  # noqa: RUF012 - a test reads and clears it

    def run_batch(self, items: list[Item]) -> list[Result | BaseException]:
        Recorder.batches.append(list(items))
        return [Result(info={"pictures": len(it.images)}) for it in items]


class RecordsEveryPicture(Recorder):
    images_used = None
