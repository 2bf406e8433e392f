"""The small interface every model family implements: load, run a batch, unload."""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from storage.errors import InputError

__all__ = [
    "Adapter",
    "Artifact",
    "InputError",
    "Item",
    "ModelUnavailable",
    "NoParams",
    "Result",
    "load_adapter",
]


class ModelUnavailable(RuntimeError):
    """The model cannot run here: a package or the weights are missing.

    The message must say what to install and where the weights go.
    """


class NoParams(BaseModel):
    """Adapters with no tunable parameters accept none (typos are errors, not ignored)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Item:
    """One job's work inside a batch; inputs are already read, with size limits."""

    job_id: int
    task: str
    params: dict[str, Any]
    seed: int | None = None
    prompt: str | None = None
    images: list[bytes] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)
    # The input mesh, read and checked (storage.meshes.load_mesh): one trimesh.Trimesh,
    # its scene's transforms applied, its visuals (UVs, texture) kept, its frame as stored
    # (DESIGN.md's glTF frame for meshes this system made; an STL may well be Z-up).
    mesh: Any = None
    mesh_name: str | None = None


@dataclass
class Artifact:
    name: str  # file name inside the job's output folder, e.g. "texture.png"
    data: bytes


@dataclass
class Result:
    """What an adapter hands back for one item.

    ``mesh`` (a ``trimesh.Trimesh`` or ``trimesh.Scene``) is the primary output: the
    runner writes it in the job's ``output_format`` as ``mesh.<ext>``, renders the
    preview from it and records its statistics. ``artifacts`` are extra files.
    """

    mesh: Any = None
    artifacts: list[Artifact] = field(default_factory=list)
    # The artifact that is this stage's mesh when the adapter wrote it itself (e.g.
    # "rigged.glb", which carries a skin trimesh cannot export); the runner then writes
    # no mesh.<ext>, and a chained stage takes this file as its input.
    mesh_artifact: str | None = None
    preview_rgb: Any = None  # optional (H, W, 3) uint8 overriding the default render
    info: dict[str, Any] = field(default_factory=dict)


_INPUT_NAMES = {
    "image": "a picture (the job's `image`)",
    "prompt": "a text prompt (the job's `prompt`)",
    "mesh": "a mesh (the job's `mesh`)",
}


class Adapter:
    """Base class. Subclasses set the class attributes and the three verbs."""

    # Which tasks a model serves is the registry's to say (config: ``tasks``), not the
    # class's: one model class may serve different tasks under different entries.
    # Which job inputs the model can use ("image", "prompt", "mesh"); checked at ingest
    # so that, say, a prompt-only job for an image-only model is rejected up front.
    accepts: ClassVar[tuple[str, ...]] = ("image",)
    # Which of those a job must give (e.g. texturing needs both a mesh and a picture);
    # a chained stage gets its mesh from the stage before and the job's own picture.
    requires: ClassVar[tuple[str, ...]] = ()
    # How many of a job's pictures the model looks at (None: all of them). The runner
    # reads only those: a job naming one large picture sixteen times costs one read.
    images_used: ClassVar[int | None] = None
    Params: ClassVar[type[BaseModel]] = NoParams
    version: ClassVar[str] = "0"

    def __init__(self, model_id: str, options: dict[str, Any] | None = None) -> None:
        self.model_id = model_id
        self.options = dict(options or {})
        self.device: str | None = None

    def load(self, device: str) -> None:
        """Bring weights onto ``device`` ("cpu", "cuda:0", ...). May be slow."""
        self.device = device

    def run_batch(self, items: list[Item]) -> list[Result | BaseException]:
        """Run every item; a per-item failure is returned in its slot, not raised.

        Raise only when the whole batch is lost (e.g. the device fell over). The default
        runs ``run_one`` per item, for models that gain nothing from batching; a model
        that batches on its device overrides this instead.
        """
        out: list[Result | BaseException] = []
        for item in items:
            try:
                self.check_inputs(item)
                out.append(self.run_one(item))
            except Exception as exc:  # noqa: BLE001 - one bad input spoils only its slot
                out.append(exc)
        return out

    def check_inputs(self, item: Item) -> None:
        """Raise InputError unless ``item`` has every input ``requires`` names. Ingest
        checks the job file the same way; this covers items made any other way."""
        given = {"image": bool(item.images), "prompt": bool(item.prompt),
                 "mesh": item.mesh is not None}  # fmt: skip
        missing = [_INPUT_NAMES[need] for need in self.requires if not given[need]]
        if missing:
            raise InputError(f"{self.model_id} needs " + " and ".join(missing))

    def run_one(self, item: Item) -> Result:
        """One item whose required inputs are there (``check_inputs``)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither run_batch nor run_one")

    def unload(self) -> None:
        self.device = None


# Where the built-in backends were before they moved to ``adapters/builtin/``: users'
# config files may still name them, and keep working (with a warning naming the new path).
LEGACY_PATHS = {
    "adapters.builtin_inflate:InflateAdapter": "adapters.builtin.inflate:InflateAdapter",
    "adapters.builtin_project:ProjectAdapter": "adapters.builtin.project:ProjectAdapter",
    "adapters.builtin_parts:PartsAdapter": "adapters.builtin.parts:PartsAdapter",
    "adapters.builtin_rig:RigAdapter": "adapters.builtin.rig:RigAdapter",
    "adapters.builtin_convert:ConvertAdapter": "adapters.builtin.convert:ConvertAdapter",
    "adapters.builtin_noop:NoopAdapter": "adapters.builtin.noop:NoopAdapter",
}


def load_adapter_class(path: str) -> type[Adapter]:
    """Import ``"package.module:ClassName"`` (a path in ``LEGACY_PATHS``: its new one)."""
    if path in LEGACY_PATHS:
        new = LEGACY_PATHS[path]
        # FutureWarning, not DeprecationWarning: the reader is whoever runs the config,
        # and Python hides DeprecationWarnings raised outside __main__.
        warnings.warn(
            f"adapter path {path!r} is deprecated; use {new!r} in the config",
            FutureWarning,
            stacklevel=2,
        )
        path = new
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"adapter path {path!r} must look like 'package.module:Class'")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"{path} is not an Adapter subclass")
    return cls


def load_adapter(path: str, model_id: str, options: dict[str, Any] | None = None) -> Adapter:
    return load_adapter_class(path)(model_id, options)
