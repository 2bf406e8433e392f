#!/usr/bin/env python3
"""gen3d-batch admin CLI: python manage.py VERB --help."""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from config import Settings, load_settings
from config.text import SafeFormatter, printable
from db import queue
from db.engine import Database, create
from db.migrate import SchemaOutOfDate, current_revision, ensure_schema, head_revision, upgrade

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"


class App:
    """What every verb needs, opened on first use."""

    def __init__(self) -> None:
        self.verbose = 0
        self._settings: Settings | None = None
        self._db: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    def db(self, *, migrate: bool = True) -> Database:
        if self._db is None:
            self._db = Database(create(self.settings.database_url))
            if migrate:  # SQLite migrates itself on first use; PostgreSQL asks for `migrate`
                try:
                    ensure_schema(self._db, auto=self._db.dialect == "sqlite")
                except SchemaOutOfDate as exc:
                    raise click.ClickException(str(exc)) from None
        return self._db

    def ingester(self):  # type: ignore[no-untyped-def]
        from ingest.ingester import Ingester

        return Ingester(self.settings, self.db())

    def runner(self, **kw: Any):  # type: ignore[no-untyped-def]
        from runner.loop import Runner

        return Runner(self.settings, self.db(), **kw)


pass_app = click.make_pass_decorator(App, ensure=True)
JOB_ID = click.IntRange(1, 2**63 - 1)  # a job id is a positive 64-bit integer


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """gen3d-batch: drop job files, get meshes, previews and manifests."""
    # One-shot verbs say only what matters; the long-running ones (serve, run, ingest)
    # log each job at INFO (see _daemon_logging).
    level = max(logging.WARNING - 10 * verbose, logging.DEBUG)
    # Every line escaped: job and file names are anybody's, and a newline or an ANSI
    # escape in one must not forge a log line or take over the terminal.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    ctx.obj = App()
    ctx.obj.verbose = verbose


def _daemon_logging(app: App) -> None:
    if not app.verbose:
        logging.getLogger().setLevel(logging.INFO)


def _stop_on_signals(stop: threading.Event) -> None:
    """First SIGINT/SIGTERM: finish the batch in hand, then stop. Second: hand the batch
    back to the queue at once (the runner catches Shutdown) and stop."""
    from runner.loop import Shutdown

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logging.getLogger("gen3d").warning("%s again: releasing the batch now", name)
            raise Shutdown
        logging.getLogger("gen3d").warning("%s: finishing the current batch, then stopping", name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):  # PostgreSQL's EXTRACT(EPOCH ...): the views' seconds
        return float(value)
    raise TypeError(type(value).__name__)


# ---------------------------------------------------------------------------- verbs


@cli.command()
@pass_app
def migrate(app: App) -> None:
    """Bring the database to the newest schema (Alembic)."""
    db = app.db(migrate=False)
    before = current_revision(db)
    upgrade(db)
    click.echo(f"database at revision {head_revision()} (was {before or 'empty'})")


@cli.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_app
def submit(app: App, files: tuple[Path, ...], as_json: bool) -> None:
    """Validate and enqueue job files directly; prints job ids. Exit 2 on invalid input.

    A file whose name starts with '-' goes after '--': submit -- -rf.json
    """
    ingester = app.ingester()
    report, bad = [], 0
    for path in files:
        result = ingester.ingest_path(path, move=False, grace=False)
        for e in result.jobs:
            reason = result.errors.get(e.id)
            report.append(
                {
                    "id": e.id,
                    "state": e.state,
                    "new": e.created,
                    "source": str(path),
                    "entry": e.source_entry if e.source_entry >= 0 else None,
                    "error": reason,
                }
            )
            if e.state == "rejected":
                bad += 1
                click.echo(f"{printable(str(path))}: job {e.id} rejected: {reason}", err=True)
    if as_json:
        _emit_json({"jobs": report})
    else:
        for r in report:
            click.echo(f"{r['id']}\t{r['state']}{'' if r['new'] else ' (already submitted)'}")
    if bad:
        sys.exit(2)


@cli.command()
@click.option("--once", is_flag=True, help="Scan the inbox once and exit.")
@pass_app
def ingest(app: App, once: bool) -> None:
    """Watch the configured drop folder and enqueue what lands there."""
    _daemon_logging(app)
    ingester = app.ingester()
    if once:
        if ingester.inbox_prefix:  # a bucket: one listing
            made = _bucket(app, ingester).reconcile()
            click.echo(f"{made} new job object(s) in {ingester.inbox_prefix}")
            return
        results = ingester.scan(grace=False)
        made = sum(1 for r in results for e in r.jobs if e.created)
        later = sum(1 for r in results if r.status in ("retry", "deferred"))
        left = f", {later} left for a later scan (storage did not answer)" if later else ""
        click.echo(f"{len(results)} file(s), {made} new job(s){left}")
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    watcher = _watcher(app, ingester)
    watcher.start()
    click.echo(f"watching {_inbox_name(app)} (Ctrl-C to stop)", err=True)
    while not stop.wait(0.5) and watcher.error is None:
        pass
    watcher.stop()
    if watcher.error is not None:  # e.g. its SQLite file was deleted or replaced
        raise click.ClickException(watcher.error)


def _bucket(app: App, ingester: Any, on_result: Any = None) -> Any:
    from ingest.bucket import BucketIngester

    return BucketIngester(ingester, queue_url=app.settings.inbox_queue, on_result=on_result)


def _watcher(app: App, ingester: Any, on_result: Any = None) -> Any:
    """The inbox's watcher: a folder's (watchdog) or a bucket's (SQS events + listing)."""
    if ingester.inbox_prefix:
        return _bucket(app, ingester, on_result)
    from ingest.watcher import InboxWatcher

    return InboxWatcher(
        ingester, rescan_interval_s=app.settings.ingest.rescan_interval_s, on_result=on_result
    )


def _inbox_name(app: App) -> str:
    s = app.settings
    if s.inbox.startswith("s3://"):
        via = f" (events from {s.inbox_queue})" if s.inbox_queue else " (listing)"
        return s.inbox + via
    return str(s.inbox_path.absolute())


def _freeze_startup() -> None:
    """What start-up loaded (SQLAlchemy, numpy, trimesh, the adapters) lives as long as
    the process: moved out of the collector's sight, it is no longer walked by every
    full collection, which with no-work jobs come every few thousand jobs."""
    gc.collect()
    gc.freeze()


@cli.command()
@click.option("--until-idle", is_flag=True,
              help="Exit once no job this runner could run is queued or running.")  # fmt: skip
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after this many jobs.")
@pass_app
def run(app: App, until_idle: bool, max_jobs: int | None) -> None:
    """A runner: claim batches by model, run them, write outputs."""
    _daemon_logging(app)
    stop = threading.Event()
    _stop_on_signals(stop)
    runner = app.runner(stop=stop)
    _freeze_startup()
    stats = _run(runner, until_idle=until_idle, max_jobs=max_jobs)
    click.echo(
        f"runner {runner.id}: {stats.claimed} claimed, {stats.succeeded} succeeded, "
        f"{stats.failed} failed, {stats.retried} to retry",
        err=True,
    )


def _run(runner: Any, **kw: Any) -> Any:
    """The runner's loop; a runner that stopped because its database file went away
    exits non-zero with the reason."""
    from db.engine import DatabaseReplaced

    try:
        return runner.run(**kw)
    except DatabaseReplaced as exc:
        raise click.ClickException(str(exc)) from None


def _admin_verb(app: App, job_ids: tuple[int, ...], action: str) -> None:
    with app.db().write() as conn:
        outcome = getattr(queue, action)(conn, list(job_ids))
    refused = 0
    for job_id, (moved, state) in outcome.items():
        if moved:
            click.echo(f"{job_id}\t{state}")
        else:
            refused += 1
            why = "no such job" if state == "missing" else f"it is {state}"
            click.echo(f"job {job_id}: cannot {action}: {why}", err=True)
    if refused:
        sys.exit(1)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, type=JOB_ID)
@pass_app
def retry(app: App, job_ids: tuple[int, ...]) -> None:
    """Queue failed or cancelled jobs again, with fresh attempts."""
    _admin_verb(app, job_ids, "retry")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, type=JOB_ID)
@pass_app
def cancel(app: App, job_ids: tuple[int, ...]) -> None:
    """Cancel queued or running jobs (a running job's runner abandons it)."""
    _admin_verb(app, job_ids, "cancel")


@cli.command("requeue-stale")
@pass_app
def requeue_stale(app: App) -> None:
    """Return jobs whose runner stopped heartbeating (lease expired) to the queue now."""
    from db import runners

    rs = app.settings.runner
    with app.db().write() as conn:
        reaped = queue.reap(conn, max_runner_deaths=rs.max_runner_deaths)
        gone = runners.mark_gone(conn, silent_s=rs.lease_s)
    for job_id, state in sorted(reaped.items()):
        click.echo(f"{job_id}\t{state}")
    click.echo(
        f"{len(reaped)} job(s) requeued or failed; runners declared gone: {len(gone)}", err=True
    )


@cli.command()
@pass_app
def serve(app: App) -> None:
    """Ingest and a runner in one process: the embedded default's main job."""
    _daemon_logging(app)
    stop, wake = threading.Event(), threading.Event()
    _stop_on_signals(stop)
    watcher = _watcher(app, app.ingester(), on_result=lambda _r: wake.set())
    runner = app.runner(stop=stop, wake=wake)
    _freeze_startup()
    watcher.start()
    click.echo(
        f"watching {_inbox_name(app)}; outputs in {app.settings.outputs_root} (Ctrl-C to stop)",
        err=True,
    )
    try:
        _run(runner)
    finally:
        watcher.stop()


def _job_doc(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": job["id"],
        "name": job["name"],
        "task": job["task"],
        "model": job["model"],
        "state": job["state"],
        "priority": job["priority"],
        "attempts": job["attempts"],
        "source": job["source_uri"],
        "entry": job["source_entry"] if job["source_entry"] >= 0 else None,
        "error": job["error"],
        "outputs": job["outputs_uri"],
        **(
            {"stage": job["stage"] + 1, "stages": job["stages"], "parent_id": job["parent_id"]}
            if job["stages"] > 1
            else {}
        ),
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
        **({"wait_s": job["wait_s"], "run_s": job["run_s"]} if "wait_s" in job else {}),
    }


def _seconds(job: dict[str, Any]) -> str:
    """This job's own work (from its manifest: jobs of a batch share start and finish
    times), else the span from start to finish."""
    from runner.publish import read_manifest

    manifest = read_manifest(job["outputs_uri"]) if job["outputs_uri"] else None
    if manifest:
        t = manifest.get("timings", {})
        if "inference_s" in t:
            return f"{t.get('load_s', 0) + t['inference_s'] + t.get('write_s', 0):.2f}"
    if job["started_at"] and job["finished_at"]:
        return f"{(job['finished_at'] - job['started_at']).total_seconds():.2f}"
    return "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        + [fmt.format(*r) for r in rows]
    )


def _rows(jobs: list[dict[str, Any]]) -> list[list[str]]:
    """One line per job; a chain of stages is one line: its ids and tasks joined with '>',
    the state of the stage it is at (the first that has not succeeded) with its number."""
    by_id = {j["id"]: j for j in jobs}

    def first(j: dict[str, Any]) -> int:
        while j["parent_id"] in by_id:
            j = by_id[j["parent_id"]]
        return int(j["id"])

    chains: dict[int, list[dict[str, Any]]] = {}
    for j in jobs:
        chains.setdefault(first(j), []).append(j)
    rows = []
    for stages in chains.values():
        stages.sort(key=lambda j: j["stage"])
        at = next((j for j in stages if j["state"] != "succeeded"), stages[-1])
        j = stages[0]
        src = printable(Path(j["source_uri"]).name) + (
            f"#{j['source_entry']}" if j["source_entry"] >= 0 else ""
        )
        err = printable((at["error"] or "").splitlines()[0])[:70] if at["error"] else ""
        state = at["state"] + (f" {at['stage'] + 1}/{at['stages']}" if at["stages"] > 1 else "")
        done = [s for s in stages if s["outputs_uri"]]
        rows.append(
            [
                ">".join(str(s["id"]) for s in stages),
                printable(j["name"] or "")[:24],
                ">".join(s["task"] for s in stages),
                at["model"],
                state,
                _seconds(at),
                src,
                (done[-1]["outputs_uri"] if done else None) or "",
                err,
            ]
        )
    return rows


HEADER = ["id", "name", "task", "model", "state", "secs", "source", "outputs", "error"]


@cli.command()
@click.argument("job_id", type=JOB_ID, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_app
def status(app: App, job_id: int | None, as_json: bool) -> None:
    """Jobs and their outputs (one job in detail with JOB_ID)."""
    from db import reports

    with app.db().read() as conn:
        if job_id is None:
            jobs = reports.summaries(conn)
            counts = queue.count_by_state(conn)
        else:
            found = reports.summaries(conn, job_id)
            if not found:
                raise click.ClickException(f"no job {job_id}")
            job = found[0]
            history = reports.history(conn, job_id)
    if job_id is None:
        if as_json:
            _emit_json({"counts": counts, "jobs": [_job_doc(j) for j in jobs]})
        else:
            click.echo(_table(_rows(jobs), HEADER))
            click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs")
        return
    from runner.publish import read_manifest

    manifest = read_manifest(job["outputs_uri"]) if job["outputs_uri"] else None
    if as_json:
        _emit_json({"job": _job_doc(job), "events": history, "manifest": manifest})
        return
    for key, value in _job_doc(job).items():
        click.echo(f"{key:>11}: {printable(str(value)) if value is not None else ''}")
    click.echo("     events:")
    for ev in history:
        click.echo(
            f"{'':13}{ev['at']:%Y-%m-%d %H:%M:%S}  {ev['from_state'] or '':>9}"
            f" -> {ev['to_state']:<9} attempt {ev['attempt']}  {ev['runner'] or ''}"
        )
    if manifest:
        for a in manifest.get("artifacts", []):
            click.echo(f"   artifact: {a['name']} ({a['bytes']:,} bytes)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_app
def models(app: App, as_json: bool) -> None:
    """The model registry: tasks, declared cost, batch size, default per task."""
    reg = app.settings.registry
    docs = [
        {**m.model_dump(), "default_for": [t for t, d in reg.defaults.items() if d == m.id]}
        for m in reg.models.values()
    ]
    if as_json:
        _emit_json({"models": docs})
        return
    rows = [
        [
            d["id"],
            ",".join(d["tasks"]),
            d["device"],
            str(d["vram_mb"]),
            f"{d['load_s']:g}",
            str(d["max_batch"]),
            ",".join(d["default_for"]),
            d["description"],
        ]
        for d in docs
    ]
    click.echo(
        _table(rows, ["id", "tasks", "device", "vram_mb", "load_s", "batch", "default for", ""])
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_app
def gpus(app: App, as_json: bool) -> None:
    """The GPU inventory (NVML, else the configured virtual devices) and what each live
    runner holds."""
    from db import costs, runners
    from runner.gpus import inventory

    devices = [d.as_dict() for d in inventory(app.settings.gpus)]
    db = app.db()
    with db.read() as conn:
        live = [{"id": r["id"], "host": r["host"], "resident_models": r["resident_models"],
                 "devices": r["devices"]} for r in runners.live(conn)]  # fmt: skip
        measured = {m: vars(c) for m, c in costs.measured(conn).items()}
    if as_json:
        _emit_json({"devices": devices, "runners": live, "measured": measured})
        return
    if devices:
        rows = [[str(d["id"]), d["name"], f"{d['total_mb']:,}", f"{d['used_mb']:,}",
                 f"{d['free_mb']:,}", d["source"]] for d in devices]  # fmt: skip
        click.echo(_table(rows, ["id", "name", "total MiB", "used MiB", "free MiB", "source"]))
    else:
        click.echo("no GPU: CPU only")
    for r in live:
        held = ", ".join(r["resident_models"] or []) or "nothing"
        click.echo(f"runner {r['id']} on {r['host']}: holds {held}")
    for m, c in measured.items():
        peak = f"{c['peak_vram_mb']:,.0f} MiB peak" if c["peak_vram_mb"] else "no GPU peak"
        load = f"load {c['load_s']:.2f} s" if c["load_s"] is not None else "never loaded"
        click.echo(f"measured {m}: {load}, {peak} ({c['loads']} loads, {c['batches']} batches)")


def _since(value: str) -> datetime:
    """'24h', '30m', '7d', '90s', or an ISO timestamp (UTC when it names no zone)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(value[:-1]) * units[value[-1]])
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give 24h, 30m, 7d or an ISO timestamp") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@cli.command()
@click.option("--since", default="24h", show_default=True,
              help="Window start: 24h, 30m, 7d, or an ISO timestamp.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_app
def report(app: App, since: str, as_json: bool) -> None:
    """Throughput, latency percentiles, failure rates and model loads over a window."""
    from db import reports

    start = _since(since)
    with app.db().read() as conn:
        doc = reports.report(conn, start, datetime.now(UTC))
    if as_json:
        _emit_json(doc)
        return
    f = doc["finished"]

    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rate = doc["failure_rate"]
    click.echo(f"since {doc['since']}: {f['succeeded']} succeeded ({doc['succeeded_per_hour']}/h), "
               f"{f['failed']} failed"
               f"{'' if rate is None else f' ({rate:.1%})'}, {f['rejected']} rejected, "
               f"{f['cancelled']} cancelled")  # fmt: skip
    w, r = doc["wait_s"], doc["run_s"]
    click.echo(f"wait s p50 {sec(w['p50'])}, p95 {sec(w['p95'])}, max {sec(w['max'])}; "
               f"run s p50 {sec(r['p50'])}, p95 {sec(r['p95'])}; "
               f"{doc['loads']} model loads ({doc['load_s_total']:.1f} s)")  # fmt: skip
    b = doc["backlog"]
    click.echo(f"now: {b['queued']} queued, {b['running']} running, {b['waiting']} waiting")
    if doc["models"]:
        rows = [[m["model"], str(m["succeeded"]), str(m["failed"]),
                 "-" if m["failure_rate"] is None else f"{m['failure_rate']:.1%}",
                 str(m["retries"]), sec(m["wait_p50_s"]), sec(m["wait_p95_s"]),
                 sec(m["run_p50_s"]), str(m["loads"]), f"{m['load_s_total']:.1f}"]
                for m in doc["models"]]  # fmt: skip
        click.echo(_table(rows, ["model", "ok", "failed", "fail %", "retries", "wait p50",
                                 "wait p95", "run p50", "loads", "load s"]))  # fmt: skip


@cli.command()
@pass_app
def demo(app: App) -> None:
    """Run the bundled examples end to end and show where the results are."""
    files = sorted(EXAMPLES.glob("*.json")) + sorted(EXAMPLES.glob("*.jsonl"))
    if not files:
        raise click.ClickException(
            f"no example job files in {EXAMPLES}; run python examples/make_examples.py"
        )
    ingester = app.ingester()
    ids: list[int] = []
    for path in files:
        ids += [e.id for e in ingester.ingest_path(path, move=False, grace=False).jobs]
    click.echo(
        f"submitted {len(ids)} job(s) from {len(files)} file(s) in {EXAMPLES}; running...", err=True
    )
    t0 = time.perf_counter()
    app.runner().run(until_idle=True)
    with app.db().read() as conn:
        jobs = [j for j in (queue.get_job(conn, i) for i in ids) if j]
    click.echo(_table(_rows(jobs), HEADER))
    ok = [j for j in jobs if j["state"] == "succeeded"]
    click.echo(f"\n{len(ok)} of {len(jobs)} succeeded in {time.perf_counter() - t0:.1f} s.")
    if ok:
        first = Path(ok[0]["outputs_uri"])
        click.echo(
            f"Look at {first / 'preview.png'} (and mesh.*, manifest.json beside it);"
            f" every job's folder is under {first.parent}."
        )
    click.echo(
        f"Next: `python manage.py serve`, then drop a job file into {app.settings.inbox_path}/."
    )


if __name__ == "__main__":
    cli()
