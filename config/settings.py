"""Settings: built-in defaults, then the YAML file named by GEN3D_CONFIG, then GEN3D_* env.

No file is needed for the embedded default. Relative paths are relative to the
current directory, like the database URL's ``sqlite:///var/...``.

Every default is written once, in ``defaults.yaml``, which is read first and under
everything else; the models below say what a setting may be (its type and bounds, no
unknown keys), never what it is by default, so the two cannot drift apart.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from config.registry import Registry

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")

# GEN3D_<NAME> -> dotted key in the settings tree.
ENV_KEYS = {
    "GEN3D_DATABASE_URL": "database_url",
    "GEN3D_INBOX": "inbox",
    "GEN3D_OUTPUTS": "outputs",
    "GEN3D_INBOX_QUEUE": "inbox_queue",
    "GEN3D_LEASE_S": "runner.lease_s",
    "GEN3D_HEARTBEAT_S": "runner.heartbeat_s",
    "GEN3D_REAP_INTERVAL_S": "runner.reap_interval_s",
    "GEN3D_POLL_INTERVAL_S": "runner.poll_interval_s",
    "GEN3D_MAX_ATTEMPTS": "runner.max_attempts",
    "GEN3D_RESCAN_INTERVAL_S": "ingest.rescan_interval_s",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestSettings(_Section):
    # Where file events come from: the kernel's inotify read directly (Linux), watchdog
    # (any system), or "auto": inotify where there is one.
    watcher: Literal["auto", "inotify", "watchdog"]
    rescan_interval_s: float = Field(gt=0)
    missing_input_grace_s: float = Field(ge=0)
    settle_s: float = Field(ge=0)
    # A job file that does not parse (yet) while it is younger than this is looked at
    # again rather than rejected: a slow writer's half-written file looks just like it.
    unfinished_grace_s: float = Field(ge=0)
    max_job_file_bytes: int = Field(gt=0)
    max_entries_per_file: int = Field(gt=0)
    # s3:// inputs outside the bucket inbox must start with one of these prefixes.
    s3_allow: list[str]
    # Bucket inbox: SQS long-poll wait, and how often to list the prefix as well (the
    # fallback without a queue, the reconciliation beside one).
    sqs_wait_s: int = Field(ge=0, le=20)
    list_interval_s: float = Field(gt=0)
    # Receives in flight at once: one receive takes at most 10 messages, so a burst of
    # events drains only as fast as receives come back.
    sqs_consumers: int = Field(ge=1, le=32)


class RunnerSettings(_Section):
    poll_interval_s: float = Field(gt=0)
    lease_s: float = Field(gt=0)
    heartbeat_s: float = Field(gt=0)  # lease renewal; well under lease_s
    reap_interval_s: float = Field(gt=0)
    # While a model's batches come back full, keep claiming it without re-reading the
    # queue's demand for up to this long (bounds how late a more urgent model is seen).
    plan_interval_s: float = Field(ge=0)
    # Aging: no job waits longer than this because its model is unpopular.
    max_wait_s: float = Field(gt=0)
    # Kept free on each GPU: the CUDA context (~0.6 GiB a process) and fragmentation.
    vram_reserve_mb: int = Field(ge=0)
    max_runner_deaths: int = Field(ge=1)
    max_attempts: int = Field(ge=1)
    retry_base_s: float = Field(ge=0)
    retry_max_s: float = Field(ge=0)
    # A batch whose pictures together pass this runs in parts: a batch of eight jobs
    # each naming a 46 MB picture must not hold them all (and their decodes) at once.
    max_batch_input_bytes: int = Field(gt=0)
    # A job whose outputs could not be written because the storage was out goes back to
    # the queue without using an attempt, runnable again after this long; meanwhile the
    # runner claims nothing until a probe of the outputs succeeds.
    storage_retry_s: float = Field(ge=0)


class Limits(_Section):
    max_picture_bytes: int = Field(gt=0)
    max_picture_pixels: int = Field(gt=0)
    max_mesh_bytes: int = Field(gt=0)  # a mesh input with the files it refers to
    max_mesh_faces: int = Field(gt=0)


class Settings(_Section):
    database_url: str
    inbox: str
    outputs: str
    inbox_queue: str | None
    ingest: IngestSettings
    runner: RunnerSettings
    limits: Limits
    # Virtual GPUs for a machine without an NVIDIA driver: [{id: 0, vram_mb: 24576}].
    gpus: list[dict[str, Any]]
    models: dict[str, dict[str, Any]]
    default_models: dict[str, str]

    @cached_property
    def registry(self) -> Registry:
        return Registry.from_config(self.models, self.default_models)

    @property
    def inbox_path(self) -> Path:
        return Path(self.inbox)

    @property
    def outputs_path(self) -> Path:
        return Path(self.outputs)

    @property
    def outputs_root(self) -> str:
        """Where job folders go, ending in '/': an absolute path or an s3:// prefix."""
        if self.outputs.startswith("s3://"):
            return self.outputs.rstrip("/") + "/"
        return str(self.outputs_path.resolve()) + "/"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, ``GEN3D_CONFIG``, ``GEN3D_*`` and keyword overrides."""
    env = dict(os.environ if env is None else env)
    tree: dict[str, Any] = yaml.safe_load(DEFAULTS_FILE.read_text())
    user_file = env.get("GEN3D_CONFIG")
    if user_file:
        path = Path(user_file)
        if not path.is_file():
            raise FileNotFoundError(f"GEN3D_CONFIG names {path}, which is not a file")
        tree = _merge(tree, yaml.safe_load(path.read_text()) or {})
    for var, dotted in ENV_KEYS.items():
        if env.get(var):
            _set_dotted(tree, dotted, env[var])
    tree = _merge(tree, overrides)
    return Settings.model_validate(tree)
