"""Storage faults between s3fs and a real moto S3 server: a fault-injecting proxy on loopback.

One `galscale classify` run meets all faults at once (one job run keeps the suite fast).
Transient faults (500, 503, SlowDown throttling, connection resets, truncated bodies, a failed
PUT) are retried with back-off and give the same catalog as a clean run. A permanent fault on
one chunk fails exactly the tile that reads it, with the reason; `galscale classify` exits 1;
a rerun once the storage is healthy finishes just that tile.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
import ray
import s3fs

from galscale import catalog
from galscale.pipeline.job import run_survey_job

from .conftest import N_TILES, RUN_ID, assert_same_catalog, cli_env
from .faulty_s3 import FaultRule, FaultyS3Proxy

# chunk (1, 1) (pixels 128-255) is read by four tiles, chunk (0, 0) by tile r0000c0000 only
TRANSIENT = (
    FaultRule("slowdown", "/sci/F150W/c/1/1", times=2),
    FaultRule("503", "/sci/F200W/c/1/1", times=2),
    FaultRule("500", "/err/F277W/c/1/1", times=1),
    FaultRule("reset", "/sci/F356W/c/1/1", times=2),
    FaultRule("truncate", "/sci/F444W/c/1/1", times=2),
    FaultRule("503", "/tiles/", method="PUT", times=1),  # every tile file's first PUT fails
)


@pytest.fixture(scope="module")
def faulty_s3(s3_server, field):
    """The field uploaded to moto; a proxy in front of it; a local Ray that reaches both."""
    bucket = s3_server.new_bucket()
    fs = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    fs.put(field.survey, f"{bucket}/field.zarr", recursive=True)
    with FaultyS3Proxy(s3_server.endpoint_url) as proxy:
        ray.init(address="local", num_cpus=2, log_to_driver=False, runtime_env={"env_vars": {
            k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}})
        try:
            yield {"bucket": bucket, "proxy": proxy, "fs": fs,
                   "address": ray.get_runtime_context().gcs_address}
        finally:
            ray.shutdown()


def _read_catalog(fs: s3fs.S3FileSystem, url: str):
    return pq.read_table(io.BytesIO(fs.cat_file(url)))


@pytest.fixture(scope="module")
def faulty_run(faulty_s3, field):
    """One `galscale classify` run through the proxy with the transient faults on chunk c/1/1
    of five bands and on every tile PUT, and a permanent fault on chunk c/0/0 of F200W."""
    proxy, bucket = faulty_s3["proxy"], faulty_s3["bucket"]
    proxy.set_rules(*TRANSIENT, FaultRule("500", "/sci/F200W/c/0/0", times=None))
    out = f"{bucket}/faulty"
    job = subprocess.run(
        [sys.executable, "-m", "galscale.cli", *field.cli_args(out, survey=f"{bucket}/field.zarr"),
         "--storage-endpoint", proxy.endpoint_url],
        env=cli_env(RAY_ADDRESS=faulty_s3["address"]), capture_output=True, text=True,
        timeout=400)
    injected = dict(proxy.injected)
    proxy.set_rules()  # the storage recovers
    print("faults injected:", injected, "of", proxy.requests, "requests")
    return {"job": job, "out": out, "injected": injected,
            "options": {"endpoint_url": proxy.endpoint_url}}


def test_transient_faults_are_retried_to_the_clean_rows(faulty_run, faulty_s3, reference):
    injected, job = faulty_run["injected"], faulty_run["job"]
    assert set(injected) == {"slowdown", "503", "500", "reset", "truncate"}, injected
    assert injected["503"] >= N_TILES - 1 + 2  # 2 on the chunk + the first PUT of each tile
    finished = catalog.finished_tiles(faulty_run["out"], RUN_ID, faulty_run["options"])
    assert len(finished) == N_TILES - 1, (finished, job.stdout[-3000:], job.stderr[-3000:])
    table = _read_catalog(faulty_s3["fs"], f"{faulty_run['out']}/{RUN_ID}/catalog.parquet")
    ref = reference["catalog"]
    clean = ref.filter(pa.compute.is_in(ref["tile_id"], pa.array(sorted(finished))))
    worst = assert_same_catalog(table, clean, model_atol=1e-6)  # rows lost 0, duplicated 0
    print("largest model-probability difference to the clean run:", worst)


def test_permanent_fault_fails_one_tile_and_a_rerun_finishes_it(faulty_run, faulty_s3, field,
                                                              reference):
    job, out, options = faulty_run["job"], faulty_run["out"], faulty_run["options"]
    assert job.returncode == 1, job.stdout[-3000:] + job.stderr[-3000:]
    failed = catalog.failed_tiles(out, RUN_ID, storage_options=options)
    assert list(failed) == ["r0000c0000"], (failed, job.stdout[-3000:], job.stderr[-3000:])
    reason = failed["r0000c0000"]
    print("failed tile reason:", reason)
    assert "StorageReadError" in reason and "sci/F200W/c/0/0" in reason
    assert "internal error" in reason.lower()
    assert faulty_run["injected"]["500"] >= 3  # retried before giving up

    cfg = field.config(out, survey=f"{faulty_s3['bucket']}/field.zarr",
                       storage_endpoint=options["endpoint_url"])
    rerun = run_survey_job(cfg, progress=False)  # same run id, healthy storage
    assert rerun.ok and (rerun.tiles_done, rerun.tiles_skipped) == (1, N_TILES - 1)
    worst = assert_same_catalog(_read_catalog(faulty_s3["fs"], rerun.catalog),
                                reference["catalog"], model_atol=1e-6)
    print("largest model-probability difference to the clean run:", worst)
