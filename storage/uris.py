"""Reading an input by reference: ``file://`` URIs, plain paths, ``s3://`` URIs and
``data:`` URIs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from config.text import printable
from storage.errors import InputError
from storage.local import confined, read_limited


def decode_data_uri(ref: str, limit: int, what: str) -> bytes:
    head, _, payload = ref.partition(",")
    if not head.endswith(";base64"):
        raise InputError(f"{what}: only base64 data: URIs are supported")
    if len(payload) > limit * 4 // 3 + 4:
        raise InputError(f"{what}: data: URI is over the limit of {limit:,} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what}: data: URI is not valid base64") from None


def local_path(uri: str) -> Path:
    """The path of a ``file://`` URI (``Path.as_uri`` percent-encodes non-ASCII names and
    undecodable bytes; both come back as the file system's own name)."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path, errors="surrogateescape"))
    if "://" in uri:
        raise InputError(f"not a local reference: {uri}")
    return Path(uri)


def read_uri(uri: str, limit: int, *, what: str = "input") -> bytes:
    if uri.startswith("data:"):
        return decode_data_uri(uri, limit, what)
    if uri.startswith("s3://"):
        from storage import objects

        return objects.read(uri, limit, what=what)
    return read_limited(local_path(uri), limit, what=what)


def read_checked(uri: str, limit: int, *, sha256: str | None, what: str = "input") -> bytes:
    """An input as a runner reads it, long after ingest checked it. Ingest recorded a
    local input by its real path (every link resolved, inside the job file's folder):
    that path must still be real (no link put anywhere along it since), and whatever
    the URI holds now must have the sha256 recorded at ingest. A picture swapped for
    another, or for a link to one elsewhere, between ingest and run fails the job; it is
    never used in the recorded one's place."""
    if uri.startswith("file://") or "://" not in uri and not uri.startswith("data:"):
        path = os.path.normpath(local_path(uri))
        real = os.path.realpath(path)
        if real != path:
            raise InputError(
                f"{what} {display_name(uri)!r} is now reached through a symbolic link (it"
                f" leads to {printable(real)}); it was not read"
            )
        data = read_limited(path, limit, what=what)
    else:
        data = read_uri(uri, limit, what=what)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise InputError(
            f"{what} {display_name(uri)!r} changed after the job was ingested (it is not the"
            " picture whose sha256 was recorded then); submit the job again to use it"
        )
    return data


def read_mesh(
    uri: str,
    *,
    max_bytes: int,
    max_faces: int,
    max_pixels: int,
    what: str = "mesh",
    expect_sha256: str | None = None,
) -> Any:
    """A mesh input as one checked ``trimesh.Trimesh``; with ``expect_sha256`` (the
    digest taken at ingest), an InputError if any file of it changed since."""
    mesh, digest = read_mesh_digest(
        uri, max_bytes=max_bytes, max_faces=max_faces, max_pixels=max_pixels, what=what
    )
    if expect_sha256 is not None and digest != expect_sha256:
        raise InputError(
            f"{what} {display_name(uri)!r} (or a file it refers to) changed after the job was"
            " ingested; submit the job again to use the new version"
        )
    return mesh


def read_mesh_digest(
    uri: str,
    *,
    max_bytes: int,
    max_faces: int,
    max_pixels: int,
    what: str = "mesh",
) -> tuple[Any, str]:
    """A mesh input as one checked ``trimesh.Trimesh``, and a sha256 of every byte read
    for it (the mesh file, then each file it refers to, by name). The files a .gltf or
    .obj refers to are read from the mesh's own folder (never outside it), and all of
    them together stay under ``max_bytes``; each texture stays under ``max_pixels``."""
    from storage import objects
    from storage.meshes import load_mesh

    budget = [max_bytes]
    digest = hashlib.sha256()

    def take(data: bytes, name: str = "") -> bytes:
        budget[0] -= len(data)
        if budget[0] < 0:
            raise InputError(
                f"{what}: the mesh and its files are over the limit of {max_bytes:,} bytes"
            )
        digest.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\0".encode())
        return data

    main = take(read_uri(uri, max_bytes, what=what))
    if uri.startswith("s3://"):
        folder = uri.rsplit("/", 1)[0] + "/"

        def resolve(name: str) -> bytes:
            target = objects.confined_key(folder, folder, name, what=f"{what} file")
            return take(objects.read(target, budget[0], what=f"{what} file {name!r}"), name)

    else:
        base = local_path(uri).parent

        def resolve(name: str) -> bytes:
            path = confined(base, name, what=f"{what} file")
            data = read_limited(path, max(budget[0], 0), what=f"{what} file {name!r}")
            return take(data, name)

    mesh = load_mesh(
        main, display_name(uri), max_faces=max_faces, resolve=resolve, max_pixels=max_pixels
    )
    return mesh, digest.hexdigest()


def display_name(uri: str) -> str:
    if uri.startswith("data:"):
        return "inline picture"
    if uri.startswith("s3://"):
        return posixpath.basename(uri)
    return local_path(uri).name
