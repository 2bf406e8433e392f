"""Reading user meshes: every reference vetted before it is read, every index checked
before it is used (writing them is ``storage.mesh_export``).

A job's ``mesh`` is a file a stranger wrote. Three things can go wrong with it:

- it points elsewhere: a ``.gltf`` buffer, an ``.obj``'s ``mtllib`` and the ``.mtl``'s
  textures, a ``.ply``'s ``TextureFile`` name other files. Each name is checked here
  (no scheme, not absolute, no ``..`` out of the mesh's folder) before the caller's
  ``resolve`` reads it, and trimesh only ever sees our resolver, never the file system.
  trimesh swallows a failed texture or ``.mtl`` read, so the resolver remembers the
  first failure and ``load_mesh`` raises it once loading is over;
- its textures are not pictures we open: PostScript, a decompression bomb, a truncated
  PNG. trimesh decodes textures itself (with no allow-list, and dropping any that fail,
  silently), so every texture's bytes are checked before trimesh gets them: the ones a
  glTF's ``images`` hold by ``storage.textures``, every other file the resolver serves
  that the mesh does not name as a buffer or ``.mtl``, whatever its suffix;
- its numbers lie: face indices past the vertex list, NaN coordinates, a face count far
  over the limit (possibly through a glTF node graph instancing one mesh many times).
  Meshes are loaded with ``process=False``, checked as trimesh parsed them, and counted
  over the scene's instances before the scene is flattened into one mesh;
- it is not a mesh at all: garbage, empty, a point cloud.

Loading never merges vertices or drops faces, so a mesh converted to another format
keeps its counts.
"""

from __future__ import annotations

import base64
import io
import json
import posixpath
import re
import struct
import warnings
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_to_bytes

import numpy as np

from storage.errors import InputError, TransientError
from storage.pictures import RASTER_FORMATS, not_raster
from storage.textures import TextureCheck, check_gltf_images

if TYPE_CHECKING:
    import trimesh

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")

# Where trimesh's SimpleMaterial and PBRMaterial keep their pictures.
TEXTURE_ATTRIBUTES = (
    "image", "baseColorTexture", "metallicRoughnessTexture", "normalTexture",
    "occlusionTexture", "emissiveTexture",
)  # fmt: skip

Resolve = Callable[[str], bytes]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DRIVE = re.compile(r"^[A-Za-z]:[/\\]")
# One OBJ face corner: v, v/vt, v//vn or v/vt/vn (negative indices count from the end).
_OBJ_CORNER = re.compile(r"(-?\d+)(?:/(-?\d*))?(?:/(-?\d*))?")


# ---------------------------------------------------------------------------- references


def safe_reference(ref: str, *, owner: str, percent_encoded: bool = False) -> str:
    """The name ``owner`` refers to, as a clean relative path inside the mesh's folder.

    Raises InputError for a URI with a scheme, an absolute path and a ``..`` that leaves
    the folder. ``percent_encoded`` (glTF URIs) checks the decoded name too, and returns
    it, so ``%2e%2e/`` is no way around the check.
    """
    raw = str(ref).strip()
    if not raw:
        raise InputError(f"{owner} refers to a file with an empty name")
    names = [raw, unquote(raw)] if percent_encoded else [raw]
    for name in names:
        flat = name.replace("\\", "/")
        if "\x00" in flat:
            raise InputError(f"{owner} refers to {raw!r}, a name with a NUL byte")
        if _DRIVE.match(flat) or flat.startswith("/"):
            raise InputError(
                f"{owner} refers to {raw!r}, an absolute path; only files beside the mesh"
                " (relative paths inside its folder) can be used"
            )
        if _SCHEME.match(flat):
            scheme = flat.split(":", 1)[0].lower()
            raise InputError(
                f"{owner} refers to {raw!r}, a {scheme}: URI; only files beside the mesh"
                " (relative paths inside its folder) or embedded data: URIs can be used"
            )
        norm = posixpath.normpath(flat)
        if norm == ".." or norm.startswith("../"):
            raise InputError(
                f"{owner} refers to {raw!r}, which is outside the mesh's folder; only files"
                " beside the mesh (relative paths inside its folder) can be used"
            )
    return posixpath.normpath(names[-1].replace("\\", "/"))


def _data_uri(uri: str, owner: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise InputError(f"{owner} holds a malformed data: URI (no ',')")
    try:
        if header.lower().endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return unquote_to_bytes(payload)
    except ValueError as exc:
        raise InputError(f"{owner} holds a data: URI that does not decode: {exc}") from None


def _make_resolver(
    owner: str,
    resolve: Resolve | None,
    percent_encoded: bool,
    *,
    data_files: Collection[str],
    texture: TextureCheck,
) -> Any:
    """A trimesh Resolver that vets names, reads through ``resolve`` and remembers why a
    read failed (trimesh logs and ignores a missing texture or ``.mtl``).

    Every file it serves is a texture, and checked as one, unless the mesh names it in
    ``data_files`` (its buffers, its ``.mtl``): trimesh asks for nothing else, and a
    texture's suffix says nothing about what it holds. Reads are kept, so a file read by
    ``load_mesh``'s own checks and again by trimesh is fetched (and counted) once.
    """
    from trimesh.resolvers import Resolver

    class _Vetted(Resolver):
        def __init__(self) -> None:
            self.failure: BaseException | None = None
            self._read: dict[str, bytes] = {}

        def get(self, key: str) -> bytes:
            try:
                ref = str(key)
                data = self.fetch(ref)
                if ref not in data_files:
                    texture(data, f"{self._label(ref)} (a texture of {owner})")
                return data
            except BaseException as exc:
                if self.failure is None:
                    self.failure = exc
                raise

        def fetch(self, ref: str) -> bytes:
            if ref not in self._read:
                self._read[ref] = self._get(ref)
            return self._read[ref]

        def _label(self, ref: str) -> str:
            if ref[:5].lower() == "data:":
                return "a data: URI"
            return safe_reference(ref, owner=owner, percent_encoded=percent_encoded)

        def _get(self, ref: str) -> bytes:
            if ref[:5].lower() == "data:":
                return _data_uri(ref, owner)
            name = safe_reference(ref, owner=owner, percent_encoded=percent_encoded)
            if resolve is None:
                raise InputError(
                    f"{owner} refers to {ref!r}, but no files beside the mesh can be read here"
                )
            try:
                data = resolve(name)
            except (InputError, TransientError):
                raise
            except Exception as exc:  # noqa: BLE001 - the caller's resolve decides, we word it
                raise InputError(
                    f"{owner} refers to {ref!r}, which could not be read: {_short(exc)}"
                ) from None
            return data

        def write(self, name: str, data: Any) -> None:
            raise PermissionError("meshes are read-only here")

        def namespaced(self, namespace: str) -> Any:
            raise NotImplementedError("meshes refer to files beside them only")

        def keys(self) -> list[str]:
            return []

    return _Vetted()


# ---------------------------------------------------------------------------- loading


def mesh_suffix(name: str) -> str:
    """The name's mesh suffix (".glb", ...); InputError when it is not one we read."""
    suffix = posixpath.splitext(name.lower())[1]
    if suffix not in MESH_SUFFIXES:
        raise InputError(
            f"{name} is not a mesh: expected one of {', '.join(MESH_SUFFIXES)}"
            f" (got {suffix or 'no suffix'!r})"
        )
    return suffix


def load_mesh(
    data: bytes,
    name: str,
    *,
    max_faces: int,
    max_pixels: int,
    resolve: Resolve | None = None,
) -> trimesh.Trimesh:
    """One checked Trimesh from a mesh file's bytes; a scene is flattened (its node
    transforms applied, visuals kept where trimesh can concatenate them).

    ``resolve(relative_name)`` reads the files the mesh refers to, named relative to the
    mesh's own folder; it enforces the caller's confinement and byte limits. Without it,
    a mesh that refers to other files is refused. ``max_pixels`` limits each texture
    (the configured ``limits.max_picture_pixels``, as for pictures).
    """
    import trimesh

    fmt = mesh_suffix(name)[1:]
    if not data:
        raise InputError(f"{name} is empty (0 bytes)")
    if fmt == "obj":
        _check_obj_text(data, name, max_faces)
    elif fmt == "ply":
        _check_ply_header(data, name, max_faces)
    elif fmt == "stl":
        _check_stl_header(data, name, max_faces)
    elif fmt == "gltf":
        _check_gltf_json(data, name)
    texture = TextureCheck(max_pixels)
    resolver = _make_resolver(
        name,
        resolve,
        percent_encoded=fmt in ("gltf", "glb"),
        data_files=_data_files(data, fmt),
        texture=texture,
    )
    if fmt in ("gltf", "glb"):
        check_gltf_images(data, fmt, name, resolver.fetch, texture)
    try:
        scene = trimesh.load_scene(
            io.BytesIO(data), file_type=fmt, resolver=resolver, process=False
        )
    except (InputError, TransientError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the parser trips on is the file's fault
        _raise_reference_failure(resolver.failure, name)
        raise InputError(f"{name} is not a readable {fmt.upper()} file: {_short(exc)}") from None
    _raise_reference_failure(resolver.failure, name)
    return _flatten(scene, name, fmt, max_faces, max_pixels)


def _data_files(data: bytes, fmt: str) -> set[str]:
    """The references the mesh makes to files that are not textures, spelt as trimesh
    will ask the resolver for them: a glTF's buffer URIs, the ``.mtl`` an OBJ names
    (trimesh reads only the first ``mtllib``, all the rest of its line)."""
    if fmt == "obj":
        text = _obj_text(data)
        at = text.find("mtllib")
        return {text[at + 6 : text.find("\n", at)].strip()} if at >= 0 else set()
    if fmt not in ("gltf", "glb"):
        return set()
    try:
        head = data[20 : 20 + struct.unpack("<I", data[12:16])[0]] if fmt == "glb" else data
        buffers = json.loads(head).get("buffers", [])
        return {b["uri"] for b in buffers if isinstance(b.get("uri"), str)}
    except (ValueError, AttributeError, TypeError, struct.error):
        return set()  # then nothing is spared the texture check; the parse fails later


def _raise_reference_failure(failure: BaseException | None, name: str) -> None:
    if failure is None:
        return
    if isinstance(failure, InputError | TransientError):
        raise failure
    raise InputError(f"{name}: a file it refers to could not be read: {_short(failure)}")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _flatten(
    scene: trimesh.Scene, name: str, fmt: str, max_faces: int, max_pixels: int
) -> trimesh.Trimesh:
    import trimesh

    geoms = scene.geometry
    meshes = {k: g for k, g in geoms.items() if isinstance(g, trimesh.Trimesh)}
    for key, mesh in meshes.items():
        _check_arrays(mesh, name if len(geoms) == 1 else f"{name} (mesh {key!r})")
    # Faces as placed: a glTF node graph may instance one mesh many times.
    uses = [scene.graph[node][1] for node in scene.graph.nodes_geometry]
    total = sum(len(meshes[g].faces) for g in uses if g in meshes)
    if total == 0:
        if not geoms:
            raise InputError(f"{name} holds no geometry: it is empty or not a valid {fmt} file")
        if any(len(m.faces) for m in meshes.values()):
            raise InputError(f"{name} places none of its meshes in its scene (no node uses one)")
        if meshes:
            raise InputError(f"{name} has zero faces: a mesh needs triangles")
        kinds = sorted({type(g).__name__ for g in geoms.values()})
        raise InputError(
            f"{name} holds no triangles, only {', '.join(kinds)}"
            " (a point cloud or lines are not a mesh)"
        )
    if total > max_faces:
        raise InputError(f"{name} has {total:,} faces; the limit is {max_faces:,}")
    for mesh in meshes.values():
        _check_textures(mesh, name, max_pixels)
    transform = scene.graph[scene.graph.nodes_geometry[0]][0]
    if len(uses) == 1 and uses[0] in meshes and np.allclose(transform, np.eye(4)):
        out = meshes[uses[0]]  # nothing to move or join: skip the copies
    else:
        out = scene.to_mesh()
    if not np.isfinite(out.vertices).all():
        raise InputError(f"{name}: its scene transforms give non-finite coordinates")
    out.metadata["file_name"] = posixpath.basename(name)
    return out


def _check_arrays(mesh: trimesh.Trimesh, where: str) -> None:
    vertices = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.faces)
    if len(faces) == 0:
        return
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(f"{where}: faces are not triangles (shape {faces.shape})")
    lo, hi = int(faces.min()), int(faces.max())
    if lo < 0 or hi >= len(vertices):
        raise InputError(
            f"{where}: face indices out of range: they run from {lo} to {hi}, but there"
            f" are {len(vertices)} vertices (valid indices 0 to {len(vertices) - 1})"
        )
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise InputError(
            f"{where}: {int(bad.sum())} of its vertices have non-finite coordinates (NaN or"
            f" infinity), the first at index {int(np.flatnonzero(bad)[0])}"
        )


def _check_textures(mesh: trimesh.Trimesh, name: str, max_pixels: int) -> None:
    """Decode every texture trimesh holds now: a bomb or a truncated image fails the job
    at ingest, not an adapter halfway through. Their bytes were checked before trimesh
    read them; this is the second line, in case trimesh found an image we did not: its
    format is checked before a pixel is decoded."""
    from PIL import Image

    material = getattr(mesh.visual, "material", None)
    if material is None:
        return
    for attr in TEXTURE_ATTRIBUTES:
        value = getattr(material, attr, None)
        if not isinstance(value, Image.Image):
            continue
        if value.format is not None and value.format not in RASTER_FORMATS:
            raise not_raster(value.format, f"{name}: a texture ({attr})")
        w, h = value.size
        if w * h > max_pixels:
            raise InputError(
                f"{name}: a texture is {w} x {h} = {w * h:,} pixels; the limit is {max_pixels:,}"
            )
        try:
            value.load()
        except Exception as exc:  # noqa: BLE001 - a damaged picture is the input's fault
            raise InputError(f"{name}: a texture ({attr}) is damaged: {_short(exc)}") from None


def _check_obj_text(data: bytes, name: str, max_faces: int) -> None:
    """Face corners must name existing v / vt / vn entries. trimesh would raise a bare
    IndexError for some and silently mangle others (index 0, an out-of-range vt).

    Lines are found the way trimesh's parser finds them ("\\nv ", "\\nf "), so the
    counts are the ones it will index into.
    """
    text = _obj_text(data)
    counts = {kind: text.count(f"\n{kind} ") for kind in ("v", "vt", "vn")}
    lines = [chunk.split("\n", 1)[0].split("#", 1)[0] for chunk in text.split("\nf ")[1:]]
    corners = " ".join(lines).split()
    triangles = len(corners) - 2 * len(lines)
    if triangles > max_faces:
        raise InputError(f"{name} has {triangles:,} faces; the limit is {max_faces:,}")
    if not corners:
        return
    for kind, used in _obj_corner_columns(corners).items():
        n = counts[kind]
        bad = (used == 0) | (used > n) | (used < -n)
        if bad.any():
            raise InputError(
                f"{name}: face indices out of range: a face uses {kind} index"
                f" {int(used[bad][0])}, but the file has {n} {kind} entries (valid: 1 to {n},"
                f" or -1 to -{n})"
            )


def _obj_text(data: bytes) -> str:
    """An OBJ's text as trimesh's parser prepares it before it searches it."""
    text = "\n" + data.decode("utf-8", errors="replace").strip().replace("\r\n", "\n") + "\n"
    return text.replace("\\\n", "")


def _obj_corner_columns(corners: list[str]) -> dict[str, np.ndarray]:
    """The v, vt and vn indices the face corners use. Files write every corner alike
    ("v/vt/vn" throughout), which numpy parses in one go; mixed forms go corner by corner."""
    joined = " ".join(corners)
    slashes, doubles = joined.count("/"), joined.count("//")
    per = corners[0].count("/")
    kinds: tuple[str, ...] | None = None
    if doubles == 0 and slashes == per * len(corners):
        kinds, numbers = ("v", "vt", "vn")[: per + 1], joined.replace("/", " ")
    elif doubles == len(corners) and slashes == 2 * len(corners):
        kinds, numbers = ("v", "vn"), joined.replace("//", " ")
    if kinds is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # junk: caught by the size
            flat = np.fromstring(numbers, dtype=np.int64, sep=" ")
        if flat.size == len(corners) * len(kinds):
            table = flat.reshape(-1, len(kinds))
            return {kind: table[:, k] for k, kind in enumerate(kinds)}
    columns = list(zip(*_OBJ_CORNER.findall(joined), strict=True)) or [(), (), ()]
    return {
        kind: np.array([int(x) for x in column if x], dtype=np.int64)
        for kind, column in zip(("v", "vt", "vn"), columns, strict=True)
    }


def _check_ply_header(data: bytes, name: str, max_faces: int) -> None:
    end = data.find(b"end_header", 0, 1 << 16)
    if not data.startswith(b"ply") or end < 0:
        raise InputError(f"{name} is not a readable PLY file: no 'ply ... end_header' header")
    for line in data[:end].decode("ascii", errors="replace").splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "element" and words[1] == "face":
            try:
                faces = int(words[2])
            except ValueError:
                raise InputError(f"{name}: bad PLY header line {line!r}") from None
            # Polygons may be quads, so this is a floor on the triangles, not the count.
            if faces > max_faces:
                raise InputError(f"{name} has {faces:,} faces; the limit is {max_faces:,}")


def _check_stl_header(data: bytes, name: str, max_faces: int) -> None:
    if data[:5].lower() == b"solid":
        return  # ASCII (or a binary one whose header says "solid": trimesh sorts it out)
    faces = struct.unpack("<I", data[80:84])[0] if len(data) >= 84 else 0
    if len(data) < 84 or len(data) < 84 + 50 * faces:
        raise InputError(
            f"{name} is not a readable STL file: not ASCII (no 'solid' line) and too short"
            f" for a binary STL ({len(data):,} bytes; its header claims {faces:,} triangles,"
            f" which need {84 + 50 * faces:,})"
        )
    if faces > max_faces:
        raise InputError(f"{name} has {faces:,} faces; the limit is {max_faces:,}")


def _check_gltf_json(data: bytes, name: str) -> None:
    # trimesh would take bytes that are not JSON for a zipped glTF and go looking for a
    # "model.gltf" beside it.
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InputError(f"{name} is not a readable GLTF file: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{name} is not a readable GLTF file: not a JSON object")
