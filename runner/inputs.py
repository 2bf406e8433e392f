"""Reading a claimed job's inputs into the item its adapter is given.

What ingest settled is checked again here: a picture is read through ``read_checked``
(no link since ingest, the very bytes ingest hashed), a mesh against its recorded
sha256, both within the configured limits. An input that fails is the job's error, not
the batch's.
"""

from __future__ import annotations

from typing import Any

from adapters.base import Item
from config.settings import Limits
from storage.uris import display_name, read_checked, read_mesh


class Inputs:
    """The pictures of one part of a batch: each distinct one (URI and recorded sha256)
    read once and shared by every job that names it (the same picture named by many
    jobs, or many times by one, is one read and one copy in memory); ``held`` is the
    bytes held so far, which bounds a part (``runner.max_batch_input_bytes``)."""

    def __init__(self, limits: Limits, images_used: int | None) -> None:
        self.limits = limits
        self.images_used = images_used  # how many of a job's pictures its model reads
        self._read: dict[tuple[str, str | None], bytes] = {}
        self.held = 0

    def item(self, job: dict[str, Any]) -> Item:
        """The job as its adapter sees it, its inputs read; raises ``InputError``."""
        given = job["inputs"]
        limits = self.limits
        images = given.get("images", [])
        mesh_uri = given.get("mesh")
        used = images if self.images_used is None else images[: self.images_used]
        return Item(
            job_id=job["id"],
            task=job["task"],
            params=job["params"],
            seed=job["seed"],
            prompt=given.get("prompt"),
            images=self.pictures(job, used),
            image_names=[display_name(u) for u in used],
            mesh=read_mesh(mesh_uri, max_bytes=limits.max_mesh_bytes,
                           max_faces=limits.max_mesh_faces,
                           max_pixels=limits.max_picture_pixels,
                           expect_sha256=given.get("mesh_sha256")) if mesh_uri else None,
            mesh_name=display_name(mesh_uri) if mesh_uri else None,
        )  # fmt: skip

    def pictures(self, job: dict[str, Any], uris: list[str]) -> list[bytes]:
        hashes = job["inputs"].get("image_sha256") or [None] * len(uris)
        out = []
        for n, uri in enumerate(uris):
            key = (uri, hashes[n] if n < len(hashes) else None)
            data = self._read.get(key)
            if data is None:
                what = "image" if len(uris) == 1 else f"images[{n}]"
                data = read_checked(uri, self.limits.max_picture_bytes, sha256=key[1], what=what)
                self._read[key] = data
                self.held += len(data)
            out.append(data)
        return out

    def keep_only(self, item: Item) -> None:
        """A new part starts with ``item``: forget the pictures only the last part used."""
        keep = {id(data) for data in item.images}
        self._read = {k: v for k, v in self._read.items() if id(v) in keep}
        self.held = sum(len(v) for v in self._read.values())
