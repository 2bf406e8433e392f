"""Bucket ingestion: 1,000 job objects put into a bucket whose events go to SQS.

    python -m bench.s3_ingest [--jobs 1000] [--rate R] [--consumers 1 4] [--json]

Runs moto's standalone S3/SQS server on 127.0.0.1 in its own process (real HTTP and
real notifications),
a ``BucketIngester`` polling the queue as ``manage.py ingest`` does, and a SQLite
database (``GEN3D_DATABASE_URL`` for another). The objects are put from 8 threads as
fast as the server takes them; each object's put time is recorded, and its latency is
its job row's ``created_at`` minus that time. Prints the seconds from the first put
until every row exists (and after the last put), and the event-to-row latency
p50/p95/max; with several ``--consumers`` values (``ingest.sqs_consumers``), one
measurement each, side by side, on a fresh server and bucket each.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from bench import common
from config import load_settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from db.percentiles import percentile
from ingest.bucket import BucketIngester
from ingest.ingester import Ingester
from storage import objects


def moto_server(output: Any = subprocess.DEVNULL) -> tuple[subprocess.Popen[bytes], str]:
    """moto's server in a process of its own, as S3 would be (in the caller's process it
    would share the interpreter lock with the clients it serves), and its endpoint URL.
    Its output goes to ``output`` (a file opened for writing, or nothing)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=output, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                where = f"; see {output.name}" if hasattr(output, "name") else ""
                raise RuntimeError(f"moto's server did not start{where}") from None
            time.sleep(0.05)


def run(n: int, rate: float = 0.0, wait_s: int = 20, consumers: int = 4) -> dict[str, Any]:
    server, endpoint = moto_server()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    objects.reset_clients()
    folder = tempfile.mkdtemp(prefix="gen3d-bench-")
    try:
        name = f"gen3d-bench-{uuid.uuid4().hex[:8]}"
        s3, sqs = objects.client(), objects.make_client("sqs")
        s3.create_bucket(Bucket=name)
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        s3.put_bucket_notification_configuration(
            Bucket=name,
            NotificationConfiguration={"QueueConfigurations": [
                {"QueueArn": arn["Attributes"]["QueueArn"], "Events": ["s3:ObjectCreated:*"]}]},
        )  # fmt: skip
        db_url = os.environ.get("GEN3D_DATABASE_URL") or f"sqlite:///{folder}/bench.sqlite3"
        ingest = {"sqs_wait_s": wait_s, "sqs_consumers": consumers}
        settings = load_settings(env={}, database_url=db_url, inbox=f"s3://{name}/inbox",
                                 inbox_queue=url, outputs=f"s3://{name}/out",
                                 ingest=ingest)  # fmt: skip
        db = Database(create(db_url))
        upgrade(db)
        ingester = BucketIngester(Ingester(settings, db), queue_url=url)
        ingester.start()
        body = json.dumps({"task": "mesh", "prompt": "a chair", "model": "builtin-noop"}).encode()
        # Warm up (its start-up listing, a boto3 client per worker thread), then measure.
        for i in range(WARM_UP):
            objects.client().put_object(Bucket=name, Key=f"inbox/warm-up/{i}.json", Body=body)
        _wait_rows(db, WARM_UP)
        put_at: dict[str, float] = {}
        lock = threading.Lock()

        def put(i: int) -> None:
            if rate:  # paced: object i goes at t0 + i / rate
                time.sleep(max(t0 + i / rate - time.time(), 0.0))
            key = f"inbox/batch/job-{i:05d}.json"
            objects.client().put_object(Bucket=name, Key=key, Body=body)
            with lock:
                put_at[f"s3://{name}/{key}"] = time.time()

        t0 = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(n)))
        puts_s = time.time() - t0
        _wait_rows(db, WARM_UP + n)
        all_rows_s = time.time() - t0
        ingester.stop()
        with db.read() as conn:
            rows = [(a.source_uri, a.created_at) for a in queue.arrivals(conn)]
        db.dispose()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    lat = sorted(_ts(created) - put_at[uri] for uri, created in rows if uri in put_at)
    return {
        "jobs": n,
        "put_rate_per_s": rate or "as fast as possible",
        "sqs_wait_s": wait_s,
        "sqs_consumers": consumers,
        "rows": len(rows) - WARM_UP,
        "puts_s": round(puts_s, 2),
        "all_rows_s": round(all_rows_s, 2),
        "all_rows_after_last_put_s": round(all_rows_s - puts_s, 2),
        "latency_p50_s": round(percentile(lat, 0.5), 3),
        "latency_p95_s": round(percentile(lat, 0.95), 3),
        "latency_max_s": round(lat[-1], 3),
    }


WARM_UP = 20


def _wait_rows(db: Database, n: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with db.read() as conn:
            if sum(queue.count_by_state(conn).values()) >= n:
                return
        time.sleep(0.02)
    raise RuntimeError(f"fewer than {n} rows after {timeout} s")


def _ts(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="objects put per second (default: as fast as the server takes them)",
    )
    parser.add_argument(
        "--wait",
        type=int,
        default=20,
        help="ingest.sqs_wait_s: SQS long-poll seconds (0: short polls)",
    )
    parser.add_argument(
        "--consumers",
        type=int,
        nargs="+",
        default=[4],
        help="ingest.sqs_consumers: receives in flight at once (several: one run each)",
    )
    args = parser.parse_args()
    results = [run(args.jobs, args.rate, args.wait, c) for c in args.consumers]
    if len(results) == 1:
        common.emit(results[0], as_json=args.json)
    elif args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            common.emit(result, as_json=False)
            print()


if __name__ == "__main__":
    main()
