"""One runner against a PostgreSQL server some network distance away.

    GEN3D_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/postgres \
        python -m bench.rtt [--jobs 10000] [--delay-ms 0.25] [--json]

Runners on other machines than the database's pay a network round trip per statement,
and a no-work job costs little else. This starts a TCP relay in front of the server
that holds every chunk for ``--delay-ms`` in each direction (a round trip gains twice
that), fills a scratch database with no-work jobs, and times one ``manage.py run
--until-idle`` through the relay and, for comparison, straight to the server.
Prints jobs/s both ways (process start-up excluded: counted from the first claim
event to the last succeeded event) and their ratio.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from typing import Any

from sqlalchemy.engine import make_url

from bench import common
from bench.queue import ROOT, empty, enqueue, jobs_per_s, runner_env, scratch
from db.engine import Database, create
from db.migrate import upgrade


class Relay:
    """127.0.0.1:<port> -> the server, every chunk held ``delay_s`` on its way."""

    def __init__(self, host: str, port: int, delay_s: float) -> None:
        self.target = (host, port)
        self.delay_s = delay_s
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.port = 0

        async def serve() -> None:
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=self.loop.run_until_complete, args=(serve(),), daemon=True).start()
        started.wait(10)

    async def _client(self, reader: Any, writer: Any) -> None:
        up_r, up_w = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer),
                             return_exceptions=True)  # fmt: skip

    async def _pipe(self, reader: Any, writer: Any) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if (wait := due - self.loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        while data := await reader.read(1 << 16):
            queue.put_nowait((self.loop.time() + self.delay_s, data))
        queue.put_nowait((self.loop.time() + self.delay_s, b""))
        await sender


def _one_runner(url: str, n: int) -> float:
    db = Database(create(url))
    empty(db)
    enqueue(db, n, f"rtt-{os.getpid()}")
    env, outputs = runner_env(url)
    try:
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "run", "--until-idle"],
            env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        shutil.rmtree(outputs, ignore_errors=True)
    rate = jobs_per_s(db, n)
    db.dispose()
    return rate


def run(n: int, delay_ms: float) -> dict[str, Any]:
    base = os.environ.get("GEN3D_DATABASE_URL", "")
    if not base or make_url(base).get_backend_name() != "postgresql":
        raise SystemExit("bench.rtt needs GEN3D_DATABASE_URL naming a PostgreSQL server")
    url, drop = scratch(base)
    try:
        db = Database(create(url))
        upgrade(db)
        db.dispose()
        u = make_url(url)
        relay = Relay(u.host or "127.0.0.1", u.port or 5432, delay_ms / 1000)
        relayed = u.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        direct_rate = _one_runner(url, n)
        relayed_rate = _one_runner(relayed, n)
    finally:
        drop()
    return {
        "jobs": n,
        "delay_ms_each_way": delay_ms,
        "direct_jobs_per_s": round(direct_rate, 1),
        "relayed_jobs_per_s": round(relayed_rate, 1),
        "relayed_over_direct": round(relayed_rate / direct_rate, 3),
    }


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--delay-ms", type=float, default=0.25, help="added each way")
    args = parser.parse_args()
    common.emit(run(args.jobs, args.delay_ms), as_json=args.json)


if __name__ == "__main__":
    main()
