"""The job file of DESIGN.md: one object, a list of objects, or JSONL; validated strictly.

Pure: bytes in, entries out. Unknown fields are errors, not silently ignored: a typo
such as ``"outptu_format"`` would otherwise run the job with a default the user did
not ask for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Task = Literal["mesh", "texture", "segment", "rig", "convert"]
OutputFormat = Literal["glb", "obj", "ply", "stl"]

NEEDS_MESH = ("texture", "segment", "rig", "convert")


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Task
    model: str | None = Field(None, min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    output_format: OutputFormat = "glb"


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Task
    image: str | None = Field(None, min_length=1)
    images: list[str] | None = Field(None, min_length=1, max_length=16)
    prompt: str | None = Field(None, min_length=1, max_length=4000)
    mesh: str | None = Field(None, min_length=1)
    model: str | None = Field(None, min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    priority: int = Field(0, ge=-1000, le=1000)
    max_attempts: int | None = Field(None, ge=1, le=20)  # overrides the model's default
    name: str | None = Field(None, min_length=1, max_length=200)
    output_format: OutputFormat = "glb"
    then: list[StageSpec] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _inputs_fit_the_task(self) -> JobSpec:
        if self.image is not None and self.images is not None:
            raise ValueError("give 'image' or 'images', not both")
        if self.task == "mesh" and not (self.image or self.images or self.prompt):
            raise ValueError("task 'mesh' needs an 'image', 'images' or a 'prompt'")
        if self.task in NEEDS_MESH and not self.mesh:
            raise ValueError(f"task {self.task!r} needs a 'mesh'")
        return self

    @property
    def picture_refs(self) -> list[str]:
        return self.images or ([self.image] if self.image else [])


@dataclass
class Entry:
    """One job-to-be from a file: ``index`` -1 is the file as a whole."""

    index: int
    raw: Any  # the entry as written (None when the file did not parse)
    spec: JobSpec | None = None
    error: str | None = None


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {loc!r}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def validate_entry(index: int, raw: Any) -> Entry:
    where = f"entry {index}: " if index >= 0 else ""
    if not isinstance(raw, dict):
        kind = type(raw).__name__.replace("NoneType", "null").replace("dict", "object")
        return Entry(index, raw, error=f"{where}a job must be a JSON object, not {kind}")
    try:
        return Entry(index, raw, spec=JobSpec.model_validate(raw))
    except ValidationError as exc:
        return Entry(index, raw, error=where + _format_validation(exc))


def parse(data: bytes, *, jsonl: bool) -> list[Entry]:
    """Split a job file into entries, each validated on its own.

    A list or JSONL file with one bad entry still yields its good ones. A file that
    is not JSON at all yields a single error entry for the whole file.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [
            Entry(-1, None, error=f"job file is not UTF-8 text ({exc.reason} at byte {exc.start})")
        ]
    if jsonl:
        entries = []
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            return [Entry(-1, None, error="job file is empty")]
        for index, (lineno, line) in enumerate(lines):
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                entries.append(
                    Entry(index, None, error=f"entry {index} (line {lineno}): not JSON: {exc.msg}")
                )
                continue
            entries.append(validate_entry(index, raw))
        return entries
    if not text.strip():
        return [Entry(-1, None, error="job file is empty")]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return [
            Entry(
                -1,
                None,
                error=f"job file is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            )
        ]
    if isinstance(doc, list):
        if not doc:
            return [Entry(-1, doc, error="job file holds an empty list")]
        return [validate_entry(i, raw) for i, raw in enumerate(doc)]
    return [validate_entry(-1, doc)]
