"""Objects by URI: a local path or ``s3://bucket/key``, behind the same few verbs.

Ingest and the runner read and write through these, so a bucket works wherever a
folder does. S3 goes through boto3 with its own settings unchanged (``AWS_ENDPOINT_URL``,
region, credentials), so AWS, MinIO and moto all work. Transient S3 errors (5xx,
throttling, dropped connections) are retried by botocore's standard retry mode with
back-off; what is left after that raises ``TransientError`` (the job is retried later),
and permanent ones (no such bucket, access denied) raise ``StorageError`` naming the
bucket and key.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from storage.errors import InputError, StorageError, TransientError
from storage.local import (
    ensure_real_folder,
    read_limited,
    remove_stale_temps,
    write_atomic,
    write_new,
)

MULTIPART_THRESHOLD = 16 * 2**20  # larger artifacts go through boto3's managed multipart
_TRANSIENT_CODES = {
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException",
    "RequestTimeout", "RequestTimeTooSkewed", "500", "502", "503", "504",
}  # fmt: skip
_local = threading.local()


class Conflict(Exception):
    """A conditional write found the object already there (If-None-Match / If-Match)."""


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    key: str  # the bucket key, or the local path
    etag: str
    size: int
    modified: datetime | None = None


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ("bucket", "some/key")."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise InputError(f"not an s3:// URI with a bucket: {uri!r}")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join URI path parts ('/' for s3:// and local alike)."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def confined_key(prefix_uri: str, base_uri: str, ref: str, *, what: str) -> str:
    """Resolve a relative ``ref`` against ``base_uri`` (a bucket "folder"); the result
    must stay under ``prefix_uri`` (the bucket inbox), as local references stay inside
    the job file's folder."""
    if not ref or not ref.strip():
        raise InputError(f"{what} is empty")
    if ref.startswith("/"):
        raise InputError(f"{what} {ref!r} is absolute; give a key relative to the job file")
    bucket, base_key = split(base_uri)
    key = posixpath.normpath(posixpath.join(base_key, ref))
    _, root = split(prefix_uri)
    root = root.strip("/")
    if key.startswith("../") or key == ".." or (root and not (key + "/").startswith(root + "/")):
        raise InputError(f"{what} {ref!r} points outside the bucket inbox {prefix_uri}")
    return f"s3://{bucket}/{key}"


def client() -> Any:
    """A boto3 S3 client per thread (boto3 clients are thread-safe, sessions are not)."""
    got = getattr(_local, "s3", None)
    if got is None:
        got = _local.s3 = make_client("s3")
    return got


def make_client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=5,
                    read_timeout=30)  # fmt: skip
    return boto3.session.Session().client(service, config=config)


def reset_clients() -> None:
    """Forget this thread's client (tests point AWS_ENDPOINT_URL at a fresh server)."""
    _local.s3 = None


def _fail(exc: Exception, uri: str, doing: str) -> Exception:
    """Map a botocore error to ours, naming the bucket and key."""
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

    if isinstance(exc, ParamValidationError):  # e.g. an empty key: the name's fault
        return InputError(f"{doing} {uri}: not an S3 object name botocore accepts: {exc}")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound"):
            return InputError(f"{doing} {uri}: no such object")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            return Conflict(f"{doing} {uri}: it changed or exists already ({code})")
        if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
            return TransientError(f"{doing} {uri}: S3 kept failing ({code}); will retry")
        bucket = split(uri)[0]
        if code == "NoSuchBucket":
            return StorageError(f"{doing} {uri}: bucket {bucket!r} does not exist")
        if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId"):
            return StorageError(f"{doing} {uri}: access to bucket {bucket!r} denied ({code})")
        return StorageError(f"{doing} {uri}: {code}: {exc}")
    if isinstance(exc, BotoCoreError):  # connection reset, timeouts: after botocore's retries
        return TransientError(f"{doing} {uri}: {type(exc).__name__}: {exc}; will retry")
    return exc


def read(uri: str, limit: int, *, what: str = "object") -> bytes:
    """The whole object, refusing more than ``limit`` bytes."""
    return read_info(uri, limit, what=what)[0]


def read_info(uri: str, limit: int, *, what: str = "object") -> tuple[bytes, ObjectInfo]:
    """The whole object and what S3 says of the version read (its ETag): one request."""
    if not is_s3(uri):
        data = read_limited(Path(uri), limit, what=what)
        return data, ObjectInfo(uri, uri, "", len(data))
    bucket, key = split(uri)
    try:
        got = client().get_object(Bucket=bucket, Key=key)
        size = int(got.get("ContentLength", 0))
        if size > limit:
            got["Body"].close()
            raise InputError(f"{what} is {size:,} bytes; the limit is {limit:,}: {uri}")
        data = got["Body"].read(limit + 1)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped
        err = _fail(exc, uri, f"reading {what}")
        if isinstance(err, InputError):
            raise InputError(f"{what} not found: {uri}") from None
        raise err from exc
    if len(data) > limit:
        raise InputError(f"{what} is over the limit of {limit:,} bytes: {uri}")
    info = ObjectInfo(uri, key, str(got.get("ETag", "")).strip('"'), len(data),
                      got.get("LastModified"))  # fmt: skip
    return bytes(data), info


def head(uri: str) -> ObjectInfo | None:
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            return None
        st = path.stat()
        return ObjectInfo(uri, str(path), f"{st.st_mtime_ns:x}-{st.st_size:x}", st.st_size)
    bucket, key = split(uri)
    try:
        got = client().head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - mapped
        err = _fail(exc, uri, "looking up")
        if isinstance(err, InputError):
            return None
        raise err from exc
    return ObjectInfo(uri, key, str(got.get("ETag", "")).strip('"'), int(got["ContentLength"]),
                      got.get("LastModified"))  # fmt: skip


def write(uri: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None,
          content_type: str | None = None) -> None:  # fmt: skip
    """Write the whole object: readers see the old one or the new one, never a part.

    ``if_absent``: only if nothing is there (S3 If-None-Match: *; locally a hard link,
    which the kernel refuses over an existing name); ``if_match``: only if the object
    still has this ETag. Either raises ``Conflict`` otherwise. A local file has no
    version to match: ``if_match`` replaces it whatever it holds now.
    """
    if not is_s3(uri):
        if not if_absent:
            write_atomic(uri, data)
            return
        try:
            write_new(uri, data)
        except FileExistsError:
            raise Conflict(f"writing {uri}: it exists already") from None
        return
    bucket, key = split(uri)
    extra: dict[str, Any] = {}
    if content_type:
        extra["ContentType"] = content_type
    try:
        if len(data) >= MULTIPART_THRESHOLD and not (if_absent or if_match):
            from boto3.s3.transfer import TransferConfig

            client().upload_fileobj(
                io.BytesIO(data), bucket, key, ExtraArgs=extra or None,
                Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD),
            )  # fmt: skip
            return
        if if_absent:
            extra["IfNoneMatch"] = "*"
        if if_match:
            extra["IfMatch"] = f'"{if_match}"'
        client().put_object(Bucket=bucket, Key=key, Body=data, **extra)
    except Exception as exc:  # noqa: BLE001 - mapped
        raise _fail(exc, uri, "writing") from exc


def listing(prefix_uri: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
    """Objects under an ``s3://bucket/prefix/``, in key order, after ``start_after``."""
    bucket, prefix = split(prefix_uri)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        kwargs["StartAfter"] = start_after
    try:
        for page in client().get_paginator("list_objects_v2").paginate(**kwargs):
            for obj in page.get("Contents", []):
                yield ObjectInfo(f"s3://{bucket}/{obj['Key']}", obj["Key"],
                                 str(obj.get("ETag", "")).strip('"'), int(obj.get("Size", 0)),
                                 obj.get("LastModified"))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - mapped
        raise _fail(exc, prefix_uri, "listing") from exc


def ensure_folder(root: str, folder: str) -> bool:
    """Make sure ``folder`` (a job's outputs folder under the outputs ``root``) may be
    written into, before anything is: locally a real directory inside ``root``, made if
    missing, with no symbolic link below ``root`` (``storage.local.ensure_real_folder``);
    True when this call created it, so it holds nothing yet. An ``s3://`` prefix has no
    links or folders to check: False (it may hold earlier objects).

    Raises ``UnsafeFolder`` (a ``StorageError``: permanent) naming what is in the way,
    or the OSError of an unreachable root (storage trouble: transient).
    """
    if is_s3(folder):
        return False
    return ensure_real_folder(root, folder)


def remove_leftovers(folder: str) -> list[str]:
    """Remove what killed writers left in ``folder`` (stale temp files; see
    ``storage.local.remove_stale_temps``); an ``s3://`` prefix has none (S3 writes whole
    objects). Returns the names removed."""
    if is_s3(folder):
        return []
    return remove_stale_temps(folder)


def probe(root: str) -> None:
    """Write a small object under ``root`` the way outputs are written, raising what
    that raises: how a runner paused by a storage outage sees that it is over."""
    if is_s3(root):  # one key, overwritten each time: nothing accumulates
        write(join(root, ".gen3d-probe"), b"probe\n", content_type="text/plain")
        return
    path = join(root, f".gen3d-probe.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):  # a crashed earlier probe's
        os.unlink(path)
    write_new(path, b"probe\n")  # the manifest's way: a temp file, then a hard link
    os.unlink(path)
