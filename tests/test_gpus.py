"""The runner on (virtual) GPUs: inventory, planner-driven loads and evictions, measured
costs, out-of-memory handling, and ``manage.py gpus``. This machine has no NVIDIA driver,
so the devices are the configured virtual ones: the planning is real, the memory is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from config import Settings, load_settings
from db import costs, queue, runners
from db.engine import Database
from db.models import model_loads
from runner import gpus
from runner.loop import Runner
from tests import failing_adapters
from tests.processes import ROOT

GPU = [{"id": 0, "vram_mb": 24_000}]
NOOP = "adapters.builtin.noop:NoopAdapter"


def _settings(tmp_path: Path, db_url: str, models: dict, **over: object) -> Settings:
    return load_settings(
        env={}, database_url=db_url, inbox=str(tmp_path / "inbox"),
        outputs=str(tmp_path / "out"), gpus=GPU, models=models,
        default_models={}, **over,
    )  # fmt: skip


def _gpu_model(vram_mb: int, adapter: str = NOOP, batch: int = 4) -> dict:
    return {"adapter": adapter, "tasks": ["mesh"], "device": "cuda", "vram_mb": vram_mb,
            "load_s": 20.0, "infer_s": 5.0, "max_batch": batch}  # fmt: skip


def _enqueue(db: Database, model: str, n: int, tag: str) -> list[int]:
    jobs = [
        queue.NewJob(task="mesh", model=model, source_uri=f"test://{tag}", source_sha256="0" * 64,
                     source_entry=i, inputs={"prompt": "x"}, params={})
        for i in range(n)
    ]  # fmt: skip
    with db.write() as conn:
        return [e.id for e in queue.enqueue_file(conn, jobs, "/tmp/unused/")]


def test_inventory_without_a_driver_is_the_configured_devices() -> None:
    found = gpus.inventory()
    # This machine has no NVIDIA driver; on one that has, the inventory is NVML's.
    assert found == [] if gpus._nvml() is None else all(d.source == "nvml" for d in found)
    (dev,) = gpus.inventory([{"id": 0, "vram_mb": 24_576, "name": "test"}])
    assert (dev.id, dev.name, dev.total_mb, dev.free_mb, dev.source) == (
        0,
        "test",
        24_576,
        24_576,
        "config",
    )
    assert gpus.wait_for_free(0, 10**9, timeout_s=0.1)  # nothing to wait for without NVML
    assert gpus.peak_reserved_mb("cuda:0") is None  # no CUDA torch here


def test_batches_by_model_and_evicts_to_fit(tmp_path: Path, db: Database, db_url: str) -> None:
    models = {"a": _gpu_model(16_000), "b": _gpu_model(16_000), "c": _gpu_model(6_000)}
    settings = _settings(tmp_path, db_url, models)
    ids = _enqueue(db, "a", 9, "a") + _enqueue(db, "b", 9, "b") + _enqueue(db, "c", 5, "c")
    runner = Runner(settings, db)
    stats = runner.run(until_idle=True)
    with db.read() as conn:
        assert queue.count_by_state(conn) == {"succeeded": len(ids)}
        measured = costs.measured(conn)
    # Each model loaded once (a and b never fit together: 16 + 16 > 24 - 1 reserve).
    assert stats.loads == 3 and stats.batches == 3 + 3 + 2
    # One batch row per model: at most one every MEASURE_EVERY_S (5 s) per model.
    assert {m: (c.loads, c.batches) for m, c in measured.items()} == {
        "a": (1, 1), "b": (1, 1), "c": (1, 1),
    }  # fmt: skip
    assert all(c.infer_s_per_job is not None for c in measured.values())
    assert all(c.load_s is not None and c.load_s >= 0 for c in measured.values())
    assert all(c.peak_vram_mb is None for c in measured.values())  # no CUDA: nothing measured
    gpu = runner.slots[1]
    assert gpu.capacity_mb == 24_000 - settings.runner.vram_reserve_mb
    assert sum(r.vram_mb for r in gpu.residents.values()) <= gpu.capacity_mb
    assert not runner.adapters  # unloaded at exit


def test_a_model_too_big_for_every_gpu_waits_for_a_bigger_runner_and_says_why(
    tmp_path: Path, db: Database, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, db_url, {"huge": _gpu_model(80_000), "small": _gpu_model(2_000)})
    with db.write() as conn:  # a runner elsewhere has an H100-size GPU
        runners.register(conn, "big-host-1", devices=[{"id": 0, "total_mb": 97_871}])
    _enqueue(db, "huge", 1, "huge")
    _enqueue(db, "small", 2, "small")
    runner = Runner(settings, db)
    assert runner.step() == 2 and runner.step() == 0
    with db.read() as conn:  # left queued for the runner with the bigger GPU
        assert queue.count_by_state(conn) == {"queued": 1, "succeeded": 2}
    assert "not running huge here: needs 80,000 MiB" in caplog.text


def test_a_runner_idle_beside_work_it_cannot_take_polls_at_its_interval(
    tmp_path: Path, db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ready jobs this runner leaves to a bigger one must not make it spin: it used to
    take their past run_after as "work is due now" and poll every 10 ms."""
    import threading
    import time

    poll = 0.3
    settings = _settings(tmp_path, db_url, {"huge": _gpu_model(80_000)},
                         runner={"poll_interval_s": poll})  # fmt: skip
    with db.write() as conn:  # a runner elsewhere has an H100-size GPU
        runners.register(conn, "big-host-1", devices=[{"id": 0, "total_mb": 97_871}])
    _enqueue(db, "huge", 3, "huge")
    looks = []
    outlook = queue.outlook
    monkeypatch.setattr(queue, "outlook", lambda *a: looks.append(1) or outlook(*a))
    runner = Runner(settings, db)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    time.sleep(1.5)
    runner.stop.set()
    runner.wake.set()
    thread.join(10)
    assert not thread.is_alive()
    assert 2 <= len(looks) <= 1.5 / poll + 2, len(looks)
    with db.read() as conn:
        assert queue.count_by_state(conn) == {"queued": 3}  # still there for the big one


def test_run_until_idle_leaves_to_a_bigger_gpu_what_only_it_can_take(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    """``run --until-idle`` runs what it can and exits: it used to poll for ever beside
    queued jobs that only another runner's bigger GPU can take."""
    import threading

    models = {"small": _gpu_model(2_000), "huge": _gpu_model(80_000)}
    settings = _settings(tmp_path, db_url, models, runner={"poll_interval_s": 0.05})
    with db.write() as conn:  # a runner elsewhere has an H100-size GPU
        runners.register(conn, "big-host-1", devices=[{"id": 0, "total_mb": 97_871}])
    _enqueue(db, "huge", 2, "huge")
    _enqueue(db, "small", 3, "small")
    runner = Runner(settings, db)
    thread = threading.Thread(target=runner.run, kwargs={"until_idle": True}, daemon=True)
    thread.start()
    thread.join(60)
    exited = not thread.is_alive()
    runner.stop.set()  # a regression must fail here, not hang the suite
    runner.wake.set()
    thread.join(10)
    assert exited
    with db.read() as conn:
        assert queue.count_by_state(conn) == {"queued": 2, "succeeded": 3}


def test_a_model_no_runner_can_hold_fails_with_the_reason(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    settings = _settings(tmp_path, db_url, {"huge": _gpu_model(80_000)})
    (jid,) = _enqueue(db, "huge", 1, "huge")
    Runner(settings, db).run(until_idle=True)
    with db.read() as conn:
        job = queue.get_job(conn, jid)
    assert job is not None and (job["state"], job["attempts"]) == ("failed", 1)
    assert "no runner seen in the last day has a GPU with 81,024 MiB" in job["error"]


def test_out_of_memory_unloads_the_others_and_retries_once(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    whole = "tests.failing_adapters:NeedsTheWholeGpu"
    models = {"small": _gpu_model(2_000), "big": _gpu_model(8_000, whole)}
    runner = Runner(_settings(tmp_path, db_url, models), db)
    gpu = runner.slots[1]
    failing_adapters.NeedsTheWholeGpu.others = lambda: [m for m in gpu.residents if m != "big"]
    try:
        _enqueue(db, "small", 1, "s")
        assert runner.step() == 1 and set(gpu.residents) == {"small"}
        ids = _enqueue(db, "big", 2, "b")
        assert runner.step() == 2
    finally:
        failing_adapters.NeedsTheWholeGpu.others = lambda: []
    assert set(gpu.residents) == {"big"}  # small was unloaded to make room
    with db.read() as conn:
        jobs = [queue.get_job(conn, i) for i in ids]
    assert [(j["state"], j["attempts"]) for j in jobs if j] == [("succeeded", 1)] * 2


def test_out_of_memory_alone_fails_the_jobs_with_the_reason(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    models = {"oom": _gpu_model(4_000, "tests.failing_adapters:AlwaysOutOfMemory")}
    runner = Runner(_settings(tmp_path, db_url, models), db)
    (jid,) = _enqueue(db, "oom", 1, "o")
    runner.run(until_idle=True)
    with db.read() as conn:
        job = queue.get_job(conn, jid)
    assert job is not None and (job["state"], job["attempts"]) == ("failed", 1)  # not retried
    assert (
        "out of GPU memory running a batch of 1 on cuda:0 with nothing else loaded" in job["error"]
    )


def test_manage_py_gpus_shows_the_devices(tmp_path: Path) -> None:
    config = tmp_path / "gpus.yaml"
    config.write_text("gpus: [{id: 0, vram_mb: 24576}, {id: 1, vram_mb: 49152, name: big}]\n")
    env = {"GEN3D_CONFIG": str(config), "GEN3D_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "gpus", "--json"], env=env,
                         cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    doc = json.loads(out.stdout)
    assert [(d["id"], d["total_mb"], d["source"]) for d in doc["devices"]] == [
        (0, 24576, "config"), (1, 49152, "config"),
    ]  # fmt: skip
    table = subprocess.run([sys.executable, str(ROOT / "manage.py"), "gpus"], env=env, cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "virtual-0" in table and "big" in table and "49,152" in table


def test_a_runner_leaves_a_short_queue_to_the_runner_holding_the_model(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    settings = _settings(tmp_path, db_url, {"m": _gpu_model(8_000, batch=4)})
    holder, other = Runner(settings, db), Runner(settings, db)
    for r in (holder, other):
        with db.write() as conn:
            runners.register(conn, r.id)
    _enqueue(db, "m", 1, "first")
    assert holder.step() == 1
    holder.heartbeat()  # publishes its residents: m
    _enqueue(db, "m", 3, "short")
    assert other.step() == 0  # the holder can drain three jobs: no second load
    _enqueue(db, "m", 6, "deep")  # 9 queued: over two full batches, worth a second copy
    assert other.step() == 4
    assert "m" in other.adapters


def test_a_cpu_runner_records_the_noop_models_load_and_batches(
    settings: Settings, db: Database
) -> None:
    _enqueue(db, "builtin-noop", 5, "noop")
    stats = Runner(settings, db).run(until_idle=True)
    with db.read() as conn:
        rows = conn.execute(
            select(model_loads.c.kind, model_loads.c.device, model_loads.c.batch_size,
                   model_loads.c.seconds).where(model_loads.c.model == "builtin-noop")
        ).all()  # fmt: skip
        cost = costs.measured(conn)["builtin-noop"]
    assert stats.loads == 1
    assert [r.kind for r in rows].count("load") == 1
    batches = [r for r in rows if r.kind == "batch"]
    assert batches and all(r.batch_size and r.batch_size >= 1 for r in batches)
    assert all(r.device == "cpu" and r.seconds >= 0 for r in rows)
    assert (cost.loads, cost.batches) == (1, len(batches))
    assert cost.load_s is not None and cost.infer_s_per_job is not None
    assert cost.peak_vram_mb is None  # a CPU model has no CUDA peak


def test_measured_costs_are_medians_of_the_recent_rows_and_the_highest_peak(
    db: Database,
) -> None:
    def row(kind: str, seconds: float, size: int | None = None, peak: float | None = None) -> None:
        with db.write() as conn:
            costs.record(conn, model="m", runner="r", device="cuda:0", kind=kind,
                         seconds=seconds, batch_size=size, peak_vram_mb=peak)  # fmt: skip

    row("load", 100.0, peak=9_000.0)  # the oldest load: outside recent=3
    for s in (10.0, 30.0, 20.0):
        row("load", s, peak=5_000.0)
    row("batch", 8.0, size=4, peak=6_500.0)  # 2 s per job
    row("batch", 3.0, size=1)  # 3 s per job
    row("batch", 4.0, size=4)  # 1 s per job
    with db.read() as conn:
        cost = costs.measured(conn, recent=3)["m"]
    assert (cost.loads, cost.batches) == (3, 3)
    assert cost.load_s == 20.0
    assert cost.infer_s_per_job == 2.0
    assert cost.peak_vram_mb == 6_500.0  # the 9,000 MiB load is no longer recent
