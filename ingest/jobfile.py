"""The job file of DESIGN.md: one object, a list of objects, or JSONL; validated strictly.

Pure: bytes in, entries out. Unknown fields are errors, not silently ignored: a typo
such as ``"outptu_format"`` would otherwise run the job with a default the user did
not ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
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
    # The bytes did not parse (not UTF-8, not JSON, empty): a file still being written
    # looks exactly like this, so a fresh one is looked at again before it is rejected.
    unfinished: bool = False


MAX_DEPTH = 32  # nesting of objects and lists in one entry; a job needs four or five
DEFAULT_MAX_ENTRIES = 10_000


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


def _unstorable(raw: Any) -> str | None:
    """Why the entry cannot be stored as it is (nested too deep, a NUL character, which
    PostgreSQL's text and JSON types refuse), or None. Walked without recursion."""
    stack: list[tuple[Any, int, str]] = [(raw, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = ((f"[{i}]", v) for i, v in enumerate(value))
        else:
            if isinstance(value, str) and "\x00" in value:
                return f"{where.lstrip('.') or 'a value'} holds a NUL character (\\u0000)"
            continue
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep"
        for key, item in items:
            if "\x00" in key:
                return f"a field name in {where.lstrip('.') or 'the entry'} holds a NUL character"
            step = key if key.startswith("[") else f".{key}"
            stack.append((item, depth + 1, where + step))
    return None


def validate_entry(index: int, raw: Any) -> Entry:
    where = f"entry {index}: " if index >= 0 else ""
    if not isinstance(raw, dict):
        kind = type(raw).__name__.replace("NoneType", "null").replace("dict", "object")
        return Entry(index, raw, error=f"{where}a job must be a JSON object, not {kind}")
    why = _unstorable(raw)
    if why is not None:
        return Entry(index, raw, error=f"{where}{why}")
    try:
        return Entry(index, raw, spec=JobSpec.model_validate(raw))
    except ValidationError as exc:
        return Entry(index, raw, error=where + _format_validation(exc))


def _not_json(exc: orjson.JSONDecodeError, text: str, *, line: bool = True) -> str:
    """orjson's reason, and the usual cause when it is a NaN or Infinity: valid in
    JavaScript and in Python's own encoder, not in JSON."""
    rest = text[exc.pos : exc.pos + 9].lstrip("-")
    hint = "; NaN and Infinity are not JSON (write null or a number)"
    extra = hint if rest.startswith(("NaN", "Infinity")) or "infinity" in exc.msg else ""
    where = f"line {exc.lineno}, column {exc.colno}" if line else f"column {exc.colno}"
    return f"not JSON: {exc.msg} ({where}){extra}"


def parse(data: bytes, *, jsonl: bool, max_entries: int = DEFAULT_MAX_ENTRIES) -> list[Entry]:
    """Split a job file into entries, each validated on its own.

    A list or JSONL file with one bad entry still yields its good ones. A file that
    is not JSON at all, or holds more than ``max_entries`` entries, yields a single
    error entry for the whole file. Parsing is strict JSON (no NaN, no Infinity) and
    bounded (orjson refuses nesting past 1,024 levels without recursing), so no file
    can make the parser raise anything but a decode error.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [
            Entry(-1, None, error=f"job file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                  unfinished=True)
        ]  # fmt: skip
    too_many = f"; the limit is {max_entries:,} a file: split it into several files"
    if jsonl:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            return [Entry(-1, None, error="job file is empty", unfinished=True)]
        if len(lines) > max_entries:
            return [Entry(-1, None, error=f"job file holds {len(lines):,} entries{too_many}")]
        entries = []
        for index, (lineno, line) in enumerate(lines):
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                reason = _not_json(exc, line, line=False)
                entries.append(
                    Entry(index, None, error=f"entry {index} (line {lineno}): {reason}",
                          unfinished=True)
                )  # fmt: skip
                continue
            entries.append(validate_entry(index, raw))
        return entries
    if not text.strip():
        return [Entry(-1, None, error="job file is empty", unfinished=True)]
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [Entry(-1, None, error=f"job file is {_not_json(exc, text)}", unfinished=True)]
    if isinstance(doc, list):
        if not doc:
            return [Entry(-1, doc, error="job file holds an empty list")]
        if len(doc) > max_entries:
            return [Entry(-1, None, error=f"job file holds {len(doc):,} entries{too_many}")]
        return [validate_entry(i, raw) for i, raw in enumerate(doc)]
    return [validate_entry(-1, doc)]
