"""Reads for people: what `status` shows comes from the analyst views job_summary and
job_history (the stable SQL surface), joined to jobs only for what the views omit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text

from db.percentiles import percentile

_SUMMARY = """
SELECT s.id, s.task, s.model, s.state, s.priority, s.attempts, s.source,
       s.created_at, s.started_at, s.finished_at, s.wait_s, s.run_s, s.error,
       j.name, j.source_uri, j.source_entry, j.outputs_uri, j.parent_id, j.stage, j.stages
FROM job_summary s JOIN jobs j ON j.id = s.id
"""


def _rows(conn: Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    from db.models import UTCDateTime

    out = []
    for row in conn.execute(text(sql), params).mappings():
        doc = dict(row)
        for key in ("created_at", "started_at", "finished_at", "at"):
            if key in doc:  # the views return raw values; give every dialect aware UTC
                doc[key] = UTCDateTime().process_result_value(doc[key], conn.dialect)
        out.append(doc)
    return out


def summaries(conn: Connection, job_id: int | None = None) -> list[dict[str, Any]]:
    if job_id is None:
        return _rows(conn, _SUMMARY + " ORDER BY s.id")
    return _rows(conn, _SUMMARY + " WHERE s.id = :id", id=job_id)


def history(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    return _rows(conn, "SELECT * FROM job_history WHERE job_id = :id ORDER BY at", id=job_id)


def _pct(values: list[float], q: float) -> float | None:
    """The q-quantile of ``values`` to the millisecond; None when there are none."""
    return round(percentile(values, q), 3) if values else None


def report(conn: Connection, since: datetime, until: datetime) -> dict[str, Any]:
    """Throughput, latency percentiles, failure rates and model loads over a window, read
    from the views (job_summary, job_history) and model_loads. Percentiles are computed
    here, so the report reads the same on SQLite and PostgreSQL."""
    from db.models import UTCDateTime

    def rows(sql: str) -> list[Any]:
        stmt = text(sql).bindparams(
            bindparam("since", type_=UTCDateTime), bindparam("until", type_=UTCDateTime)
        )
        return list(conn.execute(stmt, {"since": since, "until": until}))

    done = rows(
        "SELECT model, state, wait_s, run_s FROM job_summary"
        " WHERE finished_at >= :since AND finished_at < :until"
    )
    retries = rows(
        "SELECT model, count(*) FROM job_history WHERE from_state = 'running'"
        " AND to_state = 'queued' AND at >= :since AND at < :until GROUP BY model"
    )
    loads = rows(
        "SELECT model, seconds FROM model_loads"
        " WHERE kind = 'load' AND at >= :since AND at < :until"
    )
    backlog: dict[str, int] = dict(
        conn.execute(
            text(
                "SELECT state, count(*) FROM jobs WHERE state IN ('queued', 'running', 'waiting')"
                " GROUP BY state"
            )  # fmt: skip
        ).all()
    )
    hours = max((until - since).total_seconds() / 3600, 1e-9)
    models = sorted({r.model for r in done} | {r[0] for r in retries} | {r.model for r in loads})
    per_model = []
    for m in models:
        mine = [r for r in done if r.model == m]
        ok = [r for r in mine if r.state == "succeeded"]
        failed = sum(r.state == "failed" for r in mine)
        model_loads = [float(r.seconds) for r in loads if r.model == m]
        per_model.append({
            "model": m,
            "succeeded": len(ok),
            "failed": failed,
            "failure_rate": round(failed / (len(ok) + failed), 4) if ok or failed else None,
            "retries": next((int(n) for mm, n in retries if mm == m), 0),
            "wait_p50_s": _pct([float(r.wait_s) for r in ok if r.wait_s is not None], 0.5),
            "wait_p95_s": _pct([float(r.wait_s) for r in ok if r.wait_s is not None], 0.95),
            "run_p50_s": _pct([float(r.run_s) for r in ok if r.run_s is not None], 0.5),
            "run_p95_s": _pct([float(r.run_s) for r in ok if r.run_s is not None], 0.95),
            "loads": len(model_loads),
            "load_s_total": round(sum(model_loads), 3),
        })  # fmt: skip
    ok_all = [r for r in done if r.state == "succeeded"]
    counts = {
        s: sum(r.state == s for r in done) for s in ("succeeded", "failed", "rejected", "cancelled")
    }
    settled = counts["succeeded"] + counts["failed"]
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "finished": counts,
        "succeeded_per_hour": round(counts["succeeded"] / hours, 2),
        "failure_rate": round(counts["failed"] / settled, 4) if settled else None,
        "wait_s": {
            "p50": _pct([float(r.wait_s) for r in ok_all if r.wait_s is not None], 0.5),
            "p95": _pct([float(r.wait_s) for r in ok_all if r.wait_s is not None], 0.95),
            "max": _pct([float(r.wait_s) for r in ok_all if r.wait_s is not None], 1.0),
        },
        "run_s": {
            "p50": _pct([float(r.run_s) for r in ok_all if r.run_s is not None], 0.5),
            "p95": _pct([float(r.run_s) for r in ok_all if r.run_s is not None], 0.95),
        },
        "loads": len(loads),
        "load_s_total": round(sum(float(r.seconds) for r in loads), 3),
        "backlog": {s: int(backlog.get(s, 0)) for s in ("queued", "running", "waiting")},
        "models": per_model,
    }
