"""Job kill and resume: the same run is SIGKILLed early, midway and while writing a tile, then
resubmitted with the same run id; the final catalog equals an uninterrupted run row for row and
value for value, a torn tile file is never read as complete, and a rerun writes nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from galscale import catalog
from galscale.pipeline.job import run_survey_job

from .conftest import N_TILES, RUN_ID, assert_same_catalog, cli_env

DRIVER = Path(__file__).with_name("fault_driver.py")


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module; the killed drivers connect to it like `ray job submit`."""
    ray.init(address="local", num_cpus=2, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _kill_at(point: str, n: int, field, out: Path, address: str, tmp: Path) -> None:
    """Start the job as a separate driver process, SIGKILL it at the pause point."""
    marker = tmp / f"{point}-{n}.paused"
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), point, str(n), str(marker), "--", *field.cli_args(out)],
        env=cli_env(RAY_ADDRESS=address), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert marker.exists(), f"the job never reached {point} {n}: {err.decode()[-2000:]}"


def _files(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_killed_three_times_then_resumed_equals_uninterrupted_run(
        ray_address, field, reference, tmp_path):
    out = tmp_path / "out"
    run = out / RUN_ID

    # 1. early: killed as the first finished tile was about to be written
    _kill_at("before-write", 0, field, out, ray_address, tmp_path)
    assert catalog.read_manifests(str(out), RUN_ID) == {}
    assert not (run / "tiles").exists() or not any((run / "tiles").iterdir())

    # 2. midway: resubmitted, killed after three tiles were written
    _kill_at("before-write", 3, field, out, ray_address, tmp_path)
    finished = catalog.finished_tiles(str(out), RUN_ID)
    assert len(finished) == 3
    kept = {t: (run / "tiles" / f"{t}.parquet").stat().st_mtime_ns for t in finished}

    # 3. while writing: resubmitted, killed between a tile's Parquet file and its manifest
    _kill_at("after-tile-file", 0, field, out, ray_address, tmp_path)
    orphans = {p.stem for p in (run / "tiles").glob("*.parquet")} - finished
    assert len(orphans) == 1, orphans
    assert catalog.finished_tiles(str(out), RUN_ID) == finished  # not counted as finished
    # and a torn write (what a non-atomic store could leave): half a Parquet file, no manifest
    all_tiles = {f"r{r:04d}c{c:04d}" for r in range(3) for c in range(3)}
    torn = sorted(all_tiles - finished - orphans)[0]
    whole = (reference["out"] / RUN_ID / "tiles" / f"{torn}.parquet").read_bytes()
    (run / "tiles" / f"{torn}.parquet").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(run / "tiles" / f"{torn}.parquet")  # really unreadable
    assert len(catalog.gather_catalog(str(out), RUN_ID)) == sum(
        m["rows"] for m in catalog.read_manifests(str(out), RUN_ID).values())

    # 4. resumed in-process with the same run id: only the unfinished tiles are processed
    resumed = run_survey_job(field.config(out), progress=False)
    assert resumed.ok, resumed.tiles_failed
    assert (resumed.tiles_skipped, resumed.tiles_done) == (3, N_TILES - 3)
    for tile_id, mtime in kept.items():
        assert (run / "tiles" / f"{tile_id}.parquet").stat().st_mtime_ns == mtime
    table = pq.read_table(resumed.catalog)
    ref = reference["catalog"]
    # row for row, value for value; model probabilities to float32 rounding (the resumed
    # run batches rows differently)
    worst = assert_same_catalog(table, ref, model_atol=1e-6)
    print("largest model-probability difference to the clean run:", worst)
    manifests = catalog.read_manifests(str(out), RUN_ID)
    for tile_id in orphans | {torn}:  # rewritten whole, matching their new manifests
        data = (run / "tiles" / f"{tile_id}.parquet").read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifests[tile_id]["sha256"]

    # 5. a rerun of the finished job writes nothing
    before = _files(run)
    again = run_survey_job(field.config(out), progress=False)
    assert again.ok and again.tiles_done == 0 and again.tiles_skipped == N_TILES
    after = _files(run)
    assert set(after) == set(before)
    changed = {name for name in before if after[name] != before[name]}
    assert changed <= {"summary.json"}, changed  # only the rerun's own report


def test_same_inputs_and_seed_give_byte_identical_files(ray_address, field, reference):
    """Determinism (shares this module's Ray): the reference run is repeated into the same run
    folder; every tile file, manifest and the catalog are byte-identical (no timestamps are
    written; summary.json, the run's timing report, is the only file allowed to differ)."""
    run = reference["out"] / RUN_ID
    first = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*")
             if p.is_file() and p.name != "summary.json"}
    assert sum(name.startswith("tiles/") for name in first) == N_TILES
    moved = run.with_name(f"{RUN_ID}.first")
    run.rename(moved)
    try:
        summary = run_survey_job(field.config(reference["out"]), progress=False)
        assert summary.ok and summary.tiles_done == N_TILES
        second = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*")
                  if p.is_file() and p.name != "summary.json"}
    finally:
        shutil.rmtree(run, ignore_errors=True)
        moved.rename(run)
    assert sorted(second) == sorted(first)
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, differing
    assert second["catalog.parquet"] == reference["bytes"]
