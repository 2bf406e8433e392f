"""Every file dropped into the inbox settles: it becomes rows, or a rejection with the
reason, and it never stalls the files beside it, whatever it holds or is."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import orjson
import pytest

from config import Settings
from db import queue
from db.engine import Database, create
from db.migrate import upgrade
from ingest.ingester import Ingester, IngestResult
from tests.pictures import disk_png, write_job

PNG = disk_png()
GOOD = {"task": "mesh", "image": "a.png", "name": "good"}


@pytest.fixture
def ingester(sqlite_settings: Settings) -> Ingester:
    db = Database(create(sqlite_settings.database_url))
    upgrade(db)
    return Ingester(sqlite_settings, db)


def inbox(ing: Ingester) -> Path:
    return ing.settings.inbox_path


def scan_with_a_good_file(ing: Ingester) -> dict[str, IngestResult]:
    """Scan the inbox with a good job file beside whatever the test put there; every
    file must settle, and the good one must be queued."""
    write_job(inbox(ing), "good.json", GOOD, a__png=PNG)
    results = {Path(r.path).name: r for r in ing.scan(grace=False)}
    assert [e.state for e in results["good.json"].jobs] == ["queued"]
    left = [p.name for p in inbox(ing).iterdir() if p.suffix in (".json", ".jsonl")]
    assert left == [], f"files left in the inbox: {left}"
    return results


def reason(ing: Ingester, result: IngestResult) -> str:
    (job_id,) = result.errors
    with ing.db.read() as conn:
        job = queue.get_job(conn, job_id)
    assert job is not None and job["state"] == "rejected"
    manifest = Path(job["outputs_uri"]) / "manifest.json"
    doc = json.loads(manifest.read_text(), parse_constant=_strict)
    assert doc["state"] == "rejected" and doc["error"] == job["error"]
    return str(job["error"])


def _strict(token: str) -> None:
    raise ValueError(f"{token} in a manifest: not JSON")


def test_a_job_file_nested_100000_levels_deep_is_rejected(ingester: Ingester) -> None:
    inbox(ingester).mkdir(parents=True)
    (inbox(ingester) / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    results = scan_with_a_good_file(ingester)
    assert "not JSON" in reason(ingester, results["deep.json"])


def test_an_entry_nested_deeper_than_the_limit_is_rejected_alone(ingester: Ingester) -> None:
    deep: dict = {}
    for _ in range(100):
        deep = {"a": deep}
    doc = [{**GOOD, "params": deep}, GOOD]
    path = write_job(inbox(ingester), "list.json", doc, a__png=PNG)
    result = ingester.ingest_path(path, move=True, grace=False)
    assert [e.state for e in result.jobs] == ["rejected", "queued"]
    assert "nested more than 32 levels deep" in reason(ingester, result)


def test_a_nul_byte_in_a_picture_path_is_rejected(ingester: Ingester) -> None:
    write_job(inbox(ingester), "nul.json", {"task": "mesh", "image": "a\u0000.png"})
    results = scan_with_a_good_file(ingester)
    assert "NUL" in reason(ingester, results["nul.json"])


def test_a_nul_character_in_a_name_is_rejected(ingester: Ingester) -> None:
    write_job(inbox(ingester), "nul.json", {**GOOD, "name": "x\u0000y"})
    results = scan_with_a_good_file(ingester)
    assert "name holds a NUL character" in reason(ingester, results["nul.json"])


def test_a_list_over_the_entry_limit_is_rejected_whole(ingester: Ingester) -> None:
    limit = ingester.settings.ingest.max_entries_per_file
    write_job(inbox(ingester), "huge.json", [{}] * (limit + 1))
    results = scan_with_a_good_file(ingester)
    assert f"holds {limit + 1:,} entries; the limit is {limit:,}" in reason(
        ingester, results["huge.json"]
    )


def test_a_file_of_more_rows_than_one_statement_may_bind_is_stored(settings: Settings) -> None:
    # 4,200 entries of 8 stages: 33,600 rows, over SQLite's 32,766 bound variables.
    ing = Ingester(settings, Database(create(settings.database_url)))
    stage = {"task": "convert", "model": "builtin-noop"}
    entry = {"task": "mesh", "prompt": "a cup", "model": "builtin-noop", "then": [stage] * 7}
    path = write_job(settings.inbox_path, "many.json", [entry] * 4200)
    result = ing.ingest_path(path, move=False, grace=False)
    assert len(result.jobs) == 33_600 and not result.errors
    again = ing.ingest_path(path, move=False, grace=False)
    assert [e.id for e in again.jobs] == [e.id for e in result.jobs]
    with ing.db.read() as conn:
        assert queue.count_by_state(conn) == {"queued": 4200, "waiting": 29_400}
        last = queue.get_job(conn, result.jobs[-1].id)
    assert last is not None and last["parent_id"] == result.jobs[-2].id
    ing.db.dispose()


def test_a_picture_that_is_a_symlink_loop_is_rejected(ingester: Ingester) -> None:
    inbox(ingester).mkdir(parents=True)
    os.symlink("loop2.png", inbox(ingester) / "loop1.png")
    os.symlink("loop1.png", inbox(ingester) / "loop2.png")
    write_job(inbox(ingester), "loop.json", {"task": "mesh", "image": "loop1.png"})
    results = scan_with_a_good_file(ingester)
    assert "cannot be looked up" in reason(ingester, results["loop.json"])


def test_a_picture_name_too_long_for_the_file_system_is_rejected(ingester: Ingester) -> None:
    write_job(inbox(ingester), "long.json", {"task": "mesh", "image": "x" * 300 + ".png"})
    results = scan_with_a_good_file(ingester)
    assert "File name too long" in reason(ingester, results["long.json"])


def test_a_job_file_linked_from_outside_the_inbox_is_rejected_unread(
    ingester: Ingester, tmp_path: Path
) -> None:
    secret = tmp_path / "id_rsa.json"
    secret.write_text(json.dumps({"private_key": "-----BEGIN PRIVATE KEY----- s3cr3t"}))
    inbox(ingester).mkdir(parents=True)
    os.symlink(secret, inbox(ingester) / "leak.json")
    results = scan_with_a_good_file(ingester)
    assert "outside" in reason(ingester, results["leak.json"])
    with ingester.db.read() as conn:
        rows = [queue.get_job(conn, e.id) for e in results["leak.json"].jobs]
    manifest = Path(rows[0]["outputs_uri"], "manifest.json").read_text()  # type: ignore[index]
    assert "s3cr3t" not in manifest and "s3cr3t" not in json.dumps(rows, default=str)
    assert secret.exists()  # the link was filed away, not the file it points to


def test_a_linked_job_file_inside_the_inbox_is_read(ingester: Ingester) -> None:
    write_job(inbox(ingester) / "real", "job.json", GOOD, a__png=PNG)
    os.symlink("real/job.json", inbox(ingester) / "link.json")
    result = ingester.ingest_path(inbox(ingester) / "link.json", move=True, grace=False)
    assert [e.state for e in result.jobs] == ["queued"]


def test_a_dangling_link_as_job_file_is_rejected(ingester: Ingester) -> None:
    inbox(ingester).mkdir(parents=True)
    os.symlink("nowhere.json", inbox(ingester) / "dangling.json")
    results = scan_with_a_good_file(ingester)
    assert "link to a missing file" in reason(ingester, results["dangling.json"])


@pytest.mark.timeout(30)
def test_a_fifo_as_job_file_is_rejected_without_blocking(ingester: Ingester) -> None:
    inbox(ingester).mkdir(parents=True)
    os.mkfifo(inbox(ingester) / "pipe.json")
    results = scan_with_a_good_file(ingester)
    assert "FIFO" in reason(ingester, results["pipe.json"])


@pytest.mark.timeout(30)
def test_a_fifo_as_picture_is_rejected_without_blocking(ingester: Ingester) -> None:
    inbox(ingester).mkdir(parents=True)
    os.mkfifo(inbox(ingester) / "pipe.png")
    write_job(inbox(ingester), "pipe.json", {"task": "mesh", "image": "pipe.png"})
    results = scan_with_a_good_file(ingester)
    assert "FIFO" in reason(ingester, results["pipe.json"])


def test_an_error_manifest_keeps_a_short_escaped_excerpt_of_the_entry(ingester: Ingester) -> None:
    doc = {"task": "mesh", "image": "a.png", "notes": "\x1b[31m" + "x" * 5000}
    write_job(inbox(ingester), "long.json", doc, a__png=PNG)
    result = scan_with_a_good_file(ingester)["long.json"]
    assert "unknown field 'notes'" in reason(ingester, result)
    with ingester.db.read() as conn:
        job = queue.get_job(conn, next(iter(result.errors)))
    doc = json.loads(Path(job["outputs_uri"], "manifest.json").read_text())  # type: ignore[index]
    assert "spec" not in doc and len(doc["excerpt"]) < 200
    assert "\x1b" not in doc["excerpt"] and "\\u001b[31m" in doc["excerpt"]
    assert job["spec"] == {"excerpt": doc["excerpt"]}  # type: ignore[index]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(ingester: Ingester, token: str) -> None:
    write_job(
        inbox(ingester), "nan.json", '{"task": "mesh", "image": "a.png", "seed": ' + token + "}"
    )
    result = scan_with_a_good_file(ingester)["nan.json"]
    assert "NaN and Infinity are not JSON" in reason(ingester, result)  # strict manifest too


def test_a_picture_named_with_accents_and_spaces_is_found(ingester: Ingester) -> None:
    path = write_job(inbox(ingester), "a.json", {"task": "mesh", "image": "ëll ✓.png"})
    (inbox(ingester) / "ëll ✓.png").write_bytes(PNG)
    result = ingester.ingest_path(path, move=True, grace=False)
    assert [e.state for e in result.jobs] == ["queued"], result.errors


def test_control_characters_in_a_name_are_escaped_in_the_rejection(ingester: Ingester) -> None:
    write_job(inbox(ingester), "x\x1b[2J.json", {"task": "mesh", "image": "gone\n.png"})
    result = scan_with_a_good_file(ingester)["x\x1b[2J.json"]
    text = reason(ingester, result)
    assert "\n" not in text and "\x1b" not in text and "gone\\n.png" in text


def test_a_file_whose_rows_the_database_refuses_is_rejected_alone(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL refuses a NUL character in text; a row that slips past validation
    with one must make its file a rejection, not a batch that fails for ever."""
    from config import load_settings
    from ingest.ingester import Read

    settings = load_settings(env={}, database_url=pg_url, inbox=str(tmp_path / "inbox"),
                             outputs=str(tmp_path / "outbox"))  # fmt: skip
    ing = Ingester(settings, Database(create(pg_url)))
    with ing.db.write() as conn:
        conn.exec_driver_sql("TRUNCATE job_events, jobs RESTART IDENTITY CASCADE")
    good = write_job(settings.inbox_path, "good.json", GOOD, a__png=PNG)
    bad = write_job(settings.inbox_path, "bad.json", GOOD, a__png=PNG)
    ok, broken = (ing.read_path(p, move=True, grace=False) for p in (good, bad))
    assert isinstance(broken, Read) and isinstance(ok, Read)
    broken.rows[0].name = "nul\x00name"  # what validation refuses, forced through
    results = ing.commit([broken, ok], move=True)
    assert [e.state for e in results[1].jobs] == ["queued"]
    assert [e.state for e in results[0].jobs] == ["rejected"]
    assert "could not be stored" in next(iter(results[0].errors.values()))
    ing.db.dispose()


def test_many_files_at_once_each_settle_in_a_few_transactions(ingester: Ingester) -> None:
    for n in range(300):
        doc = GOOD if n % 3 else {"task": "mesh", "image": "missing.png"}
        write_job(inbox(ingester), f"j{n:03}.json", doc, a__png=PNG)
    results = ingester.scan(grace=False)
    states = [e.state for r in results for e in r.jobs]
    assert states.count("queued") == 200 and states.count("rejected") == 100
    assert not [p for p in inbox(ingester).iterdir() if p.suffix == ".json"]


def test_excerpt_of_a_binary_file_is_printable(ingester: Ingester) -> None:
    inbox(ingester).mkdir(parents=True)
    (inbox(ingester) / "bin.json").write_bytes(bytes(range(256)) * 4)
    result = scan_with_a_good_file(ingester)["bin.json"]
    assert "not UTF-8" in reason(ingester, result)
    with ingester.db.read() as conn:
        job = queue.get_job(conn, next(iter(result.errors)))
    excerpt = job["spec"]["excerpt"]  # type: ignore[index]
    assert excerpt.isprintable() and len(excerpt) < 200
    orjson.loads(orjson.dumps(job["spec"]))  # type: ignore[index]


def test_ingest_threads_share_nothing_they_should_not(ingester: Ingester) -> None:
    """Two threads reading files side by side (the bucket reads in a pool) each get
    their own answers."""
    for n in range(40):
        write_job(inbox(ingester), f"t{n}.json", GOOD if n % 2 else {"task": "fly"}, a__png=PNG)
    paths = sorted(inbox(ingester).glob("t*.json"))
    got: dict[str, object] = {}

    def read(part: list[Path]) -> None:
        for p in part:
            got[p.name] = ingester.read_path(p, move=True, grace=False)

    threads = [threading.Thread(target=read, args=(paths[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [
        n
        for n, r in got.items()
        if r.rows[0].state != ("queued" if int(n[1:-5]) % 2 else "rejected")
    ]  # type: ignore[attr-defined]
    assert bad == []
