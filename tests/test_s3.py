"""A bucket as inbox and output store, against moto's standalone S3/SQS server on
127.0.0.1 (real HTTP, real boto3 clients, real S3 -> SQS notifications)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh

from bench.s3_ingest import moto_server
from config import Settings, load_settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from ingest.bucket import BucketIngester, is_job_key, parse_event
from ingest.ingester import Ingester
from runner import publish
from runner.loop import Runner
from storage import objects
from storage.errors import InputError, TransientError
from tests.pictures import disk_png


@pytest.fixture
def bucket(aws: None) -> tuple[str, str]:
    """A fresh bucket whose ObjectCreated events go to a fresh SQS queue."""
    name = f"gen3d-{uuid.uuid4().hex[:12]}"
    s3, sqs = objects.client(), objects.make_client("sqs")
    s3.create_bucket(Bucket=name)
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return name, url


def _settings(tmp_path: Path, db_url: str, name: str, url: str | None, **over: Any) -> Settings:
    return load_settings(
        env={}, database_url=db_url, inbox=f"s3://{name}/inbox", inbox_queue=url,
        outputs=f"s3://{name}/out", **over,
    )  # fmt: skip


def _put(name: str, key: str, body: bytes | dict) -> None:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    objects.client().put_object(Bucket=name, Key=key, Body=data)


def _drain(ing: BucketIngester, rounds: int = 5) -> None:
    """Poll until the queue stays empty for a round."""
    for _ in range(rounds):
        if ing.poll(wait_s=1) == 0:
            return


def _noop(prompt: str) -> dict[str, str]:
    return {"task": "mesh", "prompt": prompt, "model": "builtin-noop"}


def _rows(db: Database) -> list[dict]:
    with db.read() as conn:
        return queue.list_jobs(conn)


def test_event_to_row_to_outputs_in_the_bucket(
    tmp_path: Path, db: Database, db_url: str, bucket: tuple[str, str]
) -> None:
    name, url = bucket
    settings = _settings(tmp_path, db_url, name, url)
    ing = BucketIngester(Ingester(settings, db), queue_url=url)
    _put(name, "inbox/shots/disk.png", disk_png())
    _put(name, "inbox/shots/disk job.json", {"task": "mesh", "image": "disk.png", "name": "disk"})
    _drain(ing)
    (job,) = _rows(db)
    assert (
        job["state"] == "queued" and job["source_uri"] == f"s3://{name}/inbox/shots/disk job.json"
    )
    assert job["inputs"]["images"] == [f"s3://{name}/inbox/shots/disk.png"]
    Runner(settings, db).run(until_idle=True)
    job = _rows(db)[0]
    assert job["state"] == "succeeded", job["error"]
    folder = f"s3://{name}/out/{job['id']}"
    assert job["outputs_uri"] == folder
    manifest = json.loads(objects.read(folder + "/manifest.json", 1 << 20))
    assert manifest["state"] == "succeeded"
    for art in manifest["artifacts"]:
        data = objects.read(f"{folder}/{art['name']}", 1 << 26)
        assert len(data) == art["bytes"]
    assert [a["name"] for a in manifest["artifacts"]] == ["mesh.glb", "preview.png"]
    assert objects.head(f"s3://{name}/inbox/shots/disk job.json") is not None  # left in place


def test_redelivered_and_duplicated_events_make_one_job(
    tmp_path: Path, db: Database, db_url: str, bucket: tuple[str, str]
) -> None:
    name, url = bucket
    ing = BucketIngester(Ingester(_settings(tmp_path, db_url, name, url), db), queue_url=url)
    sqs = objects.make_client("sqs")
    _put(name, "inbox/a.json", {"task": "mesh", "prompt": "x", "model": "builtin-noop"})
    # A consumer that crashed before deleting: the message comes back after the
    # visibility timeout (1 s here).
    got: list = []
    while not any("Records" in m["Body"] for m in got):
        got += sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    body = next(m["Body"] for m in got if "Records" in m["Body"])
    time.sleep(1.2)
    _drain(ing)
    sqs.send_message(QueueUrl=url, MessageBody=body)  # and a plain duplicate
    _drain(ing)
    assert len(_rows(db)) == 1
    # moto sends two events for one multipart upload (Put and CompleteMultipartUpload).
    mp = objects.client().create_multipart_upload(Bucket=name, Key="inbox/mp.json")
    part = objects.client().upload_part(
        Bucket=name, Key="inbox/mp.json", UploadId=mp["UploadId"], PartNumber=1,
        Body=json.dumps({"task": "mesh", "prompt": "y", "model": "builtin-noop"}).encode(),
    )  # fmt: skip
    objects.client().complete_multipart_upload(
        Bucket=name, Key="inbox/mp.json", UploadId=mp["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )  # fmt: skip
    _drain(ing)
    assert sorted(r["source_uri"].rsplit("/", 1)[1] for r in _rows(db)) == ["a.json", "mp.json"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"  # every message deleted


def test_a_started_ingester_with_several_consumers_makes_one_row_per_object(
    tmp_path: Path, db: Database, db_url: str, bucket: tuple[str, str]
) -> None:
    """The threads of a running ingester (a lister, three receivers) share a burst of
    events: one row per object (a re-put of the same content is the same object), every
    row reported to on_result, every message deleted; and stop does not wait out a 20 s
    long poll."""
    name, url = bucket
    settings = _settings(tmp_path, db_url, name, url, ingest={"sqs_consumers": 3})
    seen: list[str] = []
    ing = BucketIngester(
        Ingester(settings, db), queue_url=url, on_result=lambda r: seen.append(r.path)
    )
    ing.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: _put(name, f"inbox/burst/{i:03d}.json", _noop(f"p{i}")),
                          range(60)))  # fmt: skip
        _put(name, "inbox/burst/000.json", _noop("p0"))
        deadline = time.monotonic() + 60
        while len(_rows(db)) < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        sqs = objects.make_client("sqs")
        while time.monotonic() < deadline:  # the last deletes follow the last commit
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            if (
                attrs["ApproximateNumberOfMessages"]
                == attrs["ApproximateNumberOfMessagesNotVisible"]
                == "0"
            ):
                break
            time.sleep(0.1)
    finally:
        t0 = time.monotonic()
        ing.stop()
        stop_s = time.monotonic() - t0
    rows = _rows(db)
    assert sorted(r["source_uri"].rsplit("/", 1)[1] for r in rows) == [
        f"{i:03d}.json" for i in range(60)
    ]
    assert set(seen) == {r["source_uri"] for r in rows}
    assert (
        attrs["ApproximateNumberOfMessages"]
        == attrs["ApproximateNumberOfMessagesNotVisible"]
        == "0"
    )
    assert stop_s < 10  # the consumers were in 20 s long polls


def test_a_bad_object_is_rejected_with_a_manifest_and_left_in_place(
    tmp_path: Path, db: Database, db_url: str, bucket: tuple[str, str]
) -> None:
    name, url = bucket
    ing = BucketIngester(Ingester(_settings(tmp_path, db_url, name, url), db), queue_url=url)
    _put(name, "inbox/broken.json", b"{not json")
    _put(name, "inbox/escape.json", {"task": "mesh", "image": "../../secret.png"})
    _put(name, "inbox/elsewhere.json", {"task": "mesh", "image": "s3://other-bucket/x.png"})
    _drain(ing)
    rows = {r["source_uri"].rsplit("/", 1)[1]: r for r in _rows(db)}
    assert {k: r["state"] for k, r in rows.items()} == dict.fromkeys(
        ["broken.json", "escape.json", "elsewhere.json"], "rejected"
    )
    assert "outside the bucket inbox" in rows["escape.json"]["error"]
    assert "not allowed" in rows["elsewhere.json"]["error"]
    for r in rows.values():
        doc = json.loads(objects.read(f"s3://{name}/out/rejected/{r['id']}/manifest.json", 1 << 20))
        assert doc["state"] == "rejected" and doc["error"] == r["error"]
        assert objects.head(doc["source"]["kept_at"]) is not None  # the original stays


# 10,000 PUTs and 10,000 GETs through moto take minutes on a slow machine: a hang guard
# with room, not a speed test.
@pytest.mark.timeout(900)
def test_listing_ingests_ten_thousand_keys_once_each(tmp_path: Path, aws: None) -> None:
    name = f"gen3d-{uuid.uuid4().hex[:12]}"
    objects.client().create_bucket(Bucket=name)  # no notifications: the listing fallback
    body = json.dumps({"task": "mesh", "prompt": "x", "model": "builtin-noop"}).encode()
    keys = [f"inbox/{i % 97:02d}/job-{i:05d}.json" for i in range(10_000)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: _put(name, k, body), keys))
    _put(name, "inbox/pictures/not-a-job.png", disk_png())
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    db = Database(create(url))
    upgrade(db)
    ing = BucketIngester(Ingester(_settings(tmp_path, url, name, None), db), queue_url=None)
    assert ing.reconcile() == 10_000
    assert ing.reconcile() == 0  # nothing twice
    with db.read() as conn:
        assert queue.count_by_state(conn) == {"queued": 10_000}


def test_listing_resumes_from_its_checkpoint(
    tmp_path: Path, db: Database, db_url: str, aws: None
) -> None:
    from db import cursors

    name = f"gen3d-{uuid.uuid4().hex[:12]}"
    objects.client().create_bucket(Bucket=name)
    for i in range(5):
        _put(name, f"inbox/j{i}.json", {"task": "mesh", "prompt": "x", "model": "builtin-noop"})
    ing = BucketIngester(Ingester(_settings(tmp_path, db_url, name, None), db), queue_url=None)
    with db.write() as conn:  # an earlier listing stopped after j2
        cursors.save(conn, ing.prefix, "inbox/j2.json")
    assert ing.reconcile() == 2  # j3, j4
    with db.read() as conn:
        assert cursors.load(conn, ing.prefix) is None  # complete: the next starts over
    assert ing.reconcile() == 3  # j0-j2, never seen before


def test_transient_s3_errors_are_retried_then_reported(aws: None) -> None:
    name = f"gen3d-{uuid.uuid4().hex[:12]}"
    objects.client().create_bucket(Bucket=name)
    _put(name, "k.json", b"{}")
    failures = {"left": 2}

    def flaky(**kwargs: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        if failures["left"] > 0:
            failures["left"] -= 1
            return AWSResponse(
                kwargs["request"].url, 500, {}, _Raw(b"<Error><Code>InternalError</Code></Error>")
            )
        return None

    objects.client().meta.events.register("before-send.s3.GetObject", flaky)
    assert objects.read(f"s3://{name}/k.json", 100) == b"{}"  # two 500s, then fine
    failures["left"] = 100
    with pytest.raises(TransientError, match=f"s3://{name}/k.json"):
        objects.read(f"s3://{name}/k.json", 100)
    objects.client().meta.events.unregister("before-send.s3.GetObject", flaky)
    with pytest.raises(objects.StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        objects.read("s3://no-such-bucket-here/x.json", 100)


def test_a_published_manifest_is_never_replaced(aws: None) -> None:
    name = f"gen3d-{uuid.uuid4().hex[:12]}"
    objects.client().create_bucket(Bucket=name)
    folder = f"s3://{name}/out/7"
    publish.write_manifest(folder, {"state": "failed", "error": "x"})
    publish.write_manifest(folder, {"state": "succeeded", "attempt": 2})  # replaces an error
    assert publish.published(folder)
    with pytest.raises(publish.AlreadyPublished):
        publish.write_manifest(folder, {"state": "succeeded", "attempt": 3})
    assert json.loads(objects.read(folder + "/manifest.json", 1000))["attempt"] == 2


def test_status_reads_the_manifest_of_outputs_in_the_bucket(
    tmp_path: Path, db: Database, db_url: str, bucket: tuple[str, str]
) -> None:
    """``manage.py status`` reads manifests through storage: an ``s3://`` job shows its
    manifest and artifacts, and the table its own seconds, not the batch's span."""
    import os
    from datetime import timedelta

    from sqlalchemy import update

    from db.models import jobs

    name, url = bucket
    settings = _settings(tmp_path, db_url, name, url)
    _put(name, "inbox/disk.png", disk_png())
    _put(name, "inbox/disk.json", {"task": "mesh", "image": "disk.png", "name": "disk"})
    _drain(BucketIngester(Ingester(settings, db), queue_url=url))
    Runner(settings, db).run(until_idle=True)
    (job,) = _rows(db)
    assert job["state"] == "succeeded", job["error"]
    with db.write() as conn:  # a span that is not the job's own work
        conn.execute(update(jobs).where(jobs.c.id == job["id"])
                     .values(finished_at=job["started_at"] + timedelta(hours=1)))  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    env = {**{k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "PATH"},
           "GEN3D_DATABASE_URL": db_url, "GEN3D_INBOX": f"s3://{name}/inbox",
           "GEN3D_OUTPUTS": f"s3://{name}/out"}  # fmt: skip

    def status(*args: str) -> str:
        proc = subprocess.run([sys.executable, str(root / "manage.py"), "status", *args],
                              env=env, cwd=root, capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    doc = json.loads(status(str(job["id"]), "--json"))
    manifest = doc["manifest"]
    assert manifest is not None and manifest["state"] == "succeeded"
    assert manifest == json.loads(objects.read(f"{job['outputs_uri']}/manifest.json", 1 << 20))
    detail = status(str(job["id"]))
    for art in manifest["artifacts"]:
        assert f"artifact: {art['name']} ({art['bytes']:,} bytes)" in detail
    t = manifest["timings"]
    own = f"{t['load_s'] + t['inference_s'] + t['write_s']:.2f}"
    (row,) = [ln for ln in status().splitlines() if job["outputs_uri"] in ln]
    assert f" {own} " in row and "3600.00" not in row


def test_event_parsing() -> None:
    assert parse_event(json.dumps({"Event": "s3:TestEvent", "Bucket": "b"})) == []
    record = {"eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": "b"}, "object": {"key": "in%2Fa+b.json"}}}  # fmt: skip
    assert parse_event(json.dumps({"Records": [record]})) == [("b", "in/a b.json")]
    sns = {"Type": "Notification", "Message": json.dumps({"Records": [record]})}
    assert parse_event(json.dumps(sns)) == [("b", "in/a b.json")]
    removed = {**record, "eventName": "ObjectRemoved:Delete"}
    assert parse_event(json.dumps({"Records": [removed]})) == []
    assert is_job_key("in/a.json") and is_job_key("in/x/b.jsonl")
    assert not is_job_key("in/a.png") and not is_job_key("in/.accepted/a.json")
    assert not is_job_key("in/.a.json") and not is_job_key("in/a.json.tmp")


class _Raw:
    """The raw body botocore reads from an HTTP response."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def test_manage_py_ingest_once_lists_a_bucket_inbox(
    tmp_path: Path, moto_url: str, aws: None
) -> None:
    import os

    from tests.processes import ROOT

    name = f"gen3d-{uuid.uuid4().hex[:12]}"
    objects.client().create_bucket(Bucket=name)
    for i in range(3):
        _put(name, f"inbox/j{i}.json", {"task": "mesh", "prompt": "x", "model": "builtin-noop"})
    env = {**{k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "PATH"},
           "GEN3D_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
           "GEN3D_INBOX": f"s3://{name}/inbox", "GEN3D_OUTPUTS": f"s3://{name}/out"}  # fmt: skip
    run = [sys.executable, str(ROOT / "manage.py"), "ingest", "--once"]
    first = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    again = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"3 new job object(s) in s3://{name}/inbox/" in first.stdout
    assert f"0 new job object(s) in s3://{name}/inbox/" in again.stdout


def test_large_artifacts_go_through_multipart(aws: None) -> None:
    name = f"gen3d-{uuid.uuid4().hex[:12]}"
    objects.client().create_bucket(Bucket=name)
    data = bytes(range(256)) * (objects.MULTIPART_THRESHOLD // 256 + 4096)  # just over 16 MiB
    written = publish.write_artifact(f"s3://{name}/out/1", "mesh.glb", data)
    head = objects.client().head_object(Bucket=name, Key="out/1/mesh.glb")
    assert head["ContentLength"] == len(data) == written.bytes
    parts = head["ETag"].strip('"').rpartition("-")[2]
    assert parts.isdigit() and int(parts) >= 2  # a multipart upload's ETag: md5-of-parts-N
    assert head["ContentType"] == "model/gltf-binary"
    assert objects.read(f"s3://{name}/out/1/mesh.glb", len(data)) == data
    with pytest.raises(InputError, match="limit"):
        objects.read(f"s3://{name}/out/1/mesh.glb", len(data) - 1)


def test_a_gltf_mesh_in_the_bucket_runs_a_chain_whose_outputs_stay_in_the_bucket(
    tmp_path: Path, db: Database, db_url: str, bucket: tuple[str, str]
) -> None:
    """A .gltf whose buffer is a separate object next to it is read from the bucket (its
    reference confined to the mesh's folder); the chained stage reads its parent's mesh
    from the bucket outputs."""
    from tests.meshes import table

    name, url = bucket
    settings = _settings(tmp_path, db_url, name, url)
    files = trimesh.exchange.gltf.export_gltf(table().subdivide(), merge_buffers=True)
    for file_name, data in files.items():
        _put(name, f"inbox/parts/{file_name}", data)
    then = [{"task": "segment", "params": {"parts": 5}}]
    _put(name, "inbox/parts/job.json", {"task": "convert", "mesh": "model.gltf", "then": then})
    _drain(BucketIngester(Ingester(settings, db), queue_url=url))
    first, second = sorted(_rows(db), key=lambda j: j["stage"])
    assert (first["state"], second["state"]) == ("queued", "waiting"), first["error"]
    Runner(settings, db).run(until_idle=True)
    first, second = sorted(_rows(db), key=lambda j: j["stage"])
    assert first["state"] == second["state"] == "succeeded", (first["error"], second["error"])
    assert second["inputs"]["mesh"] == f"s3://{name}/out/{first['id']}/mesh.glb"
    folder = f"s3://{name}/out/{second['id']}"
    manifest = json.loads(objects.read(folder + "/manifest.json", 1 << 20))
    assert manifest["mesh_artifact"] == "parts.glb"
    labels = np.load(io.BytesIO(objects.read(folder + "/labels.npy", 1 << 24)))
    assert len(labels) == manifest["mesh"]["faces"] and len(set(labels.tolist())) >= 5


def test_a_gltf_in_the_bucket_may_not_reach_outside_its_folder(
    tmp_path: Path, db: Database, db_url: str, bucket: tuple[str, str]
) -> None:
    from tests.meshes import table

    name, url = bucket
    settings = _settings(tmp_path, db_url, name, url)
    files = trimesh.exchange.gltf.export_gltf(table(), merge_buffers=True)
    doc = json.loads(files["model.gltf"])
    (bin_name,) = [k for k in files if k.endswith(".bin")]
    _put(name, f"inbox/{bin_name}", files[bin_name])  # one folder up: exists, but not allowed
    doc["buffers"][0]["uri"] = f"../{bin_name}"
    _put(name, "inbox/a/model.gltf", json.dumps(doc).encode())
    _put(name, "inbox/a/job.json", {"task": "convert", "mesh": "model.gltf"})
    _drain(BucketIngester(Ingester(settings, db), queue_url=url))
    (job,) = _rows(db)
    assert job["state"] == "rejected" and f"../{bin_name}" in job["error"]


POISON = b"[" * 100_000 + b"]" * 100_000  # nested past any parser's recursion


def test_a_poison_object_does_not_stop_ingest_once(tmp_path: Path, aws: None) -> None:
    import os

    name = f"gen3d-{uuid.uuid4().hex[:12]}"
    objects.client().create_bucket(Bucket=name)
    _put(name, "inbox/a-poison.json", POISON)
    _put(name, "inbox/b-good.json", _noop("x"))
    env = {**{k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "PATH"},
           "GEN3D_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
           "GEN3D_INBOX": f"s3://{name}/inbox", "GEN3D_OUTPUTS": f"s3://{name}/out"}  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    run = [sys.executable, str(root / "manage.py"), "ingest", "--once"]
    done = subprocess.run(run, env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"2 new job object(s) in s3://{name}/inbox/" in done.stdout
    db = Database(create(f"sqlite:///{tmp_path / 'cli.db'}"))
    states = {r["source_uri"].rsplit("/", 1)[1]: (r["state"], r["error"]) for r in _rows(db)}
    db.dispose()
    assert states["b-good.json"] == ("queued", None)
    assert states["a-poison.json"][0] == "rejected" and "not JSON" in states["a-poison.json"][1]


def test_a_poison_object_does_not_stall_a_running_bucket_ingester(
    tmp_path: Path, db: Database, db_url: str, bucket: tuple[str, str]
) -> None:
    name, url = bucket
    settings = _settings(tmp_path, db_url, name, url, ingest={"sqs_wait_s": 1})
    ing = BucketIngester(Ingester(settings, db), queue_url=url)
    ing.start()
    try:
        _put(name, "inbox/poison.json", POISON)
        time.sleep(1.0)
        _put(name, "inbox/later.json", _noop("x"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_rows(db)) < 2:
            time.sleep(0.1)
    finally:
        ing.stop()
    states = {r["source_uri"].rsplit("/", 1)[1]: r["state"] for r in _rows(db)}
    assert states == {"poison.json": "rejected", "later.json": "queued"}


def _noop_jobs(db: Database, settings: Settings, n: int) -> list[int]:
    new = [
        queue.NewJob(task="mesh", model="builtin-noop", source_uri="file:///t.json",
                     source_sha256="ab" * 32, source_entry=i, inputs={"prompt": "x"})
        for i in range(n)
    ]  # fmt: skip
    with db.write() as conn:
        return [e.id for e in queue.enqueue_file(conn, new, settings.outputs_root)]


def test_an_s3_outage_hands_jobs_back_without_using_attempts(
    tmp_path: Path, db: Database, db_url: str, point_aws: Any
) -> None:
    """S3 gone (its server stopped): what botocore's retries leave is a TransientError, and
    the jobs wait in the queue, attempts unspent, while the runner probes the bucket."""
    server, url = moto_server()
    try:
        point_aws(url)
        objects.client().create_bucket(Bucket="gen3d-outage")
        settings = load_settings(
            env={}, database_url=db_url, inbox=str(tmp_path / "inbox"),
            outputs="s3://gen3d-outage/out", runner={"retry_base_s": 0.05, "poll_interval_s": 0.02},
        )  # fmt: skip
        ids = _noop_jobs(db, settings, 3)
        server.terminate()
        server.wait(timeout=10)
        runner = Runner(settings, db)
        worker = threading.Thread(target=runner.run, kwargs={"until_idle": True})
        worker.start()
        deadline = time.monotonic() + 60
        while runner.stats.postponed < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the runner probes, and claims nothing meanwhile
        runner.stop.set()
        worker.join(timeout=60)
    finally:
        server.kill()
        server.wait(timeout=10)
        objects.reset_clients()
    jobs = _rows(db)
    assert [(j["state"], j["attempts"]) for j in jobs] == [("queued", 0)] * len(ids)
    assert runner.stats.claimed == len(ids)  # one claim each, no spinning
    with db.read() as conn:
        detail = queue.events(conn, ids[0])[-1]["detail"]
    assert "TransientError" in detail and "EndpointConnectionError" in detail


def test_a_missing_output_bucket_still_fails_jobs_at_once(
    tmp_path: Path, db: Database, db_url: str, aws: None
) -> None:
    settings = load_settings(env={}, database_url=db_url, inbox=str(tmp_path / "inbox"),
                             outputs="s3://no-such-bucket-here/out")  # fmt: skip
    (jid,) = _noop_jobs(db, settings, 1)
    Runner(settings, db).run(until_idle=True)
    (job,) = _rows(db)
    assert (job["state"], job["attempts"]) == ("failed", 1)
    assert "bucket 'no-such-bucket-here' does not exist" in job["error"]
