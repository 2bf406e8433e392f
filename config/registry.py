"""The model registry: what each model serves, what it costs, and its default tasks."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TASKS = ("mesh", "texture", "segment", "rig", "convert")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    adapter: str  # "package.module:Class"
    tasks: list[str]
    device: str = "cpu"  # "cpu" or "cuda"
    vram_mb: int = Field(0, ge=0)
    load_s: float = Field(0.0, ge=0)
    max_batch: int = Field(1, ge=1)
    # Declared speed, until the runner has measured it: seconds for one job on its own,
    # and how much faster a full batch runs than its jobs one by one.
    infer_s: float = Field(10.0, ge=0)
    batch_speedup: float = Field(1.0, ge=1)
    max_attempts: int | None = Field(None, ge=1)
    description: str = ""
    options: dict[str, Any] = Field(default_factory=dict)


class Registry:
    """Models by id, plus the default model of each task."""

    def __init__(self, models: dict[str, ModelSpec], defaults: dict[str, str]) -> None:
        for task, model_id in defaults.items():
            if model_id not in models:
                raise ValueError(f"default model {model_id!r} for task {task!r} is not registered")
            if task not in models[model_id].tasks:
                raise ValueError(f"default model {model_id!r} does not serve task {task!r}")
        self.models = models
        self.defaults = defaults

    @classmethod
    def from_config(cls, models: dict[str, dict[str, Any]], defaults: dict[str, str]) -> Registry:
        specs = {mid: ModelSpec(id=mid, **cfg) for mid, cfg in models.items()}
        return cls(specs, dict(defaults))

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self.models[model_id]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise KeyError(f"unknown model {model_id!r} (registered: {known})") from None

    def resolve(self, task: str, model_id: str | None) -> ModelSpec:
        """The model a job runs on: its own choice, checked, or the task's default."""
        if model_id is None:
            if task not in self.defaults:
                raise KeyError(f"no default model for task {task!r}; name one with 'model'")
            return self.models[self.defaults[task]]
        spec = self.get(model_id)
        if task not in spec.tasks:
            serves = ", ".join(spec.tasks)
            raise KeyError(f"model {model_id!r} does not serve task {task!r} (it serves: {serves})")
        return spec

    @cached_property
    def ids(self) -> list[str]:
        return sorted(self.models)
