"""A mesh's textures, checked before trimesh decodes them.

trimesh decodes textures itself, with a plain ``PIL.Image.open`` that cannot be limited
to our raster formats, and when one fails it drops the texture and says nothing. So the
bytes of every texture are checked here first (``storage.pictures.check_picture``:
an allow-listed raster, under the pixel limit, every pixel decodable). A glTF's
``images`` are found here the way trimesh finds them (``trimesh.exchange.gltf``:
``load_glb``, ``load_gltf``, ``_read_buffers``, ``_parse_textures``, ``_uri_to_bytes``),
quirks included, so that the bytes checked are the bytes it will decode; the textures of
other formats arrive through the mesh's resolver, which checks each as it reads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

from storage.errors import InputError
from storage.pictures import check_picture

_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942

Fetch = Callable[[str], bytes]


class TextureCheck:
    """``check_picture`` once per distinct byte string: the glTF pass and the resolver may
    meet the same file, and several images may hold the same bytes."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._passed: set[bytes] = set()

    def __call__(self, data: bytes, name: str) -> None:
        key = hashlib.sha256(data).digest()
        if key not in self._passed:
            check_picture(data, max_pixels=self.max_pixels, name=name)
            self._passed.add(key)


def check_gltf_images(data: bytes, fmt: str, owner: str, fetch: Fetch, check: TextureCheck) -> None:
    """Check every entry of a glTF's or GLB's ``images``, wherever its bytes are: a
    bufferView (in a GLB, usually its BIN chunk), a data: URI or a file beside the mesh
    (read through ``fetch``). A layout trimesh would trip on is refused here, worded."""
    try:
        for label, image in gltf_images(data, fmt, owner, fetch):
            check(image, label)
    except InputError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, struct.error) as exc:
        raise InputError(
            f"{owner} is not a readable {fmt.upper()} file: its images cannot be found"
            f" ({type(exc).__name__}: {exc})"
        ) from None


def gltf_images(data: bytes, fmt: str, owner: str, fetch: Fetch) -> Iterator[tuple[str, bytes]]:
    """(a name for messages, the bytes) of each entry of the glTF's ``images``."""
    doc, rest, length = _glb(data, owner) if fmt == "glb" else (json.loads(data), b"", 0)
    buffers: list[bytes] | None = None
    for i, image in enumerate(doc.get("images", [])):
        if not isinstance(image, dict):
            raise InputError(f"{owner}: image {i} is not a JSON object")
        title = f" {image['name']!r}" if isinstance(image.get("name"), str) else ""
        if "bufferView" in image:  # trimesh looks for a bufferView first
            if buffers is None:
                glb = fmt == "glb"
                buffers = _glb_buffers(doc, rest, length, fetch) if glb else _buffers(doc, fetch)
            index = image["bufferView"]
            label = f"image {i}{title} of {owner} (in its bufferView {index})"
            yield label, _view(doc, buffers, index, label)
        elif "uri" in image:
            uri = image["uri"]
            inline = "base64," in uri or uri[:5].lower() == "data:"
            label = f"image {i}{title} of {owner} ({'a data: URI' if inline else repr(uri)})"
            yield label, _uri_bytes(uri, fetch, label)
        else:
            raise InputError(f"{owner}: image {i}{title} has neither a bufferView nor a uri")


def _glb(data: bytes, owner: str) -> tuple[dict[str, Any], bytes, int]:
    """A GLB's JSON chunk, the bytes after it, and the length its header declares."""
    if len(data) < 20:
        raise InputError(f"{owner} is not a readable GLB file: {len(data)} bytes is too short")
    magic, version, length, json_length, json_type = struct.unpack("<5I", data[:20])
    if magic != _GLB_MAGIC or version != 2 or json_type != _JSON_CHUNK:
        raise InputError(
            f"{owner} is not a readable GLB file: not a glTF 2 binary starting with its JSON"
        )
    try:
        doc = json.loads(data[20 : 20 + json_length])
    except ValueError as exc:
        raise InputError(f"{owner} is not a readable GLB file: its JSON chunk: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{owner} is not a readable GLB file: its JSON is not an object")
    return doc, data[20 + json_length :], length


def _glb_buffers(doc: dict[str, Any], rest: bytes, length: int, fetch: Fetch) -> list[bytes]:
    """The buffers as trimesh's ``load_glb`` lists them: each entry of ``buffers`` in turn
    is its URI's bytes, or else the next chunk (a chunk that is not BIN is skipped, and
    its entry with it), for as long as fewer bytes than the header's file length have
    been read after the JSON chunk and the file has not ended."""
    buffers: list[bytes] = []
    infos = list(doc.get("buffers", []))
    pos = 0
    while pos < length:
        if infos:
            info = infos.pop(0)
            if not isinstance(info, dict):
                raise TypeError(f"buffer entry {info!r} is not an object")
            if "uri" in info:
                buffers.append(_uri_bytes(info["uri"], fetch, "a buffer"))
                continue
        head = rest[pos : pos + 8]
        if len(head) != 8:
            break
        chunk_length, chunk_type = struct.unpack("<2I", head)
        chunk = rest[pos + 8 : pos + 8 + chunk_length]
        pos += 8 + len(chunk)
        if len(chunk) != chunk_length:
            raise ValueError("a chunk is shorter than its header says")
        if chunk_type == _BIN_CHUNK:
            buffers.append(chunk)
    return buffers


def _buffers(doc: dict[str, Any], fetch: Fetch) -> list[bytes]:
    """The buffers as trimesh's ``load_gltf`` lists them: every one is a URI."""
    return [_uri_bytes(b["uri"], fetch, "a buffer") for b in doc.get("buffers", [])]


def _view(doc: dict[str, Any], buffers: list[bytes], index: Any, label: str) -> bytes:
    view = doc["bufferViews"][index]
    start = view.get("byteOffset", 0)
    blob = buffers[view["buffer"]][start : start + view["byteLength"]]
    if len(blob) != view["byteLength"]:
        raise InputError(f"{label}: the bufferView runs past the end of its buffer")
    return blob


def _uri_bytes(uri: str, fetch: Fetch, what: str) -> bytes:
    """trimesh's ``_uri_to_bytes``: base64 from the first "base64," on, wherever it is;
    anything else goes to the resolver (which reads files and percent-encoded data:)."""
    index = uri.find("base64,")
    if index < 0:
        return fetch(uri)
    try:
        return base64.b64decode(uri[index + 7 :])
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{what}: its base64 data does not decode: {exc}") from None
