"""Reads for people: what `status` shows comes from the analyst views job_summary and
job_history (the stable SQL surface), joined to jobs only for what the views omit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

_SUMMARY = """
SELECT s.id, s.task, s.model, s.state, s.priority, s.attempts, s.source,
       s.created_at, s.started_at, s.finished_at, s.wait_s, s.run_s, s.error,
       j.name, j.source_uri, j.source_entry, j.outputs_uri
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
