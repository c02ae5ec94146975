"""The survey job: Ray Data streams tiles through CPU cutout tasks and a GPU/CPU model actor pool.

    pending tiles --(CPU tasks)--> owned sources + cutouts --(actor pool)--> probabilities
        --(driver)--> one Parquet file per tile + manifest --> survey catalog

CPU preprocessing and inference are separate operators, so they overlap; Ray Data's
back-pressure keeps only a few tiles' cutouts in memory whatever the survey size. The driver
only sees catalog rows (no pixels), reassembles them per tile (`TileLedger`) and writes each
finished tile once, atomically, with a manifest entry; a rerun with the same run id skips
finished tiles. A tile that fails is listed with its reason and retried by the next run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from galscale.config import SurveyJobConfig, to_json_dict
from galscale.pipeline.ledger import STATUS_EMPTY, STATUS_FAILED, TileLedger, TileStatusBoard
from galscale.pipeline.tiles import process_tile
from galscale.survey.store import open_survey
from galscale.survey.tiling import Tile, tiles_for

log = logging.getLogger("galscale.job")


@dataclass
class RunSummary:
    """What a survey run did; written as `<out>/run_summary.json` and printed at the end."""

    run_id: str
    survey: str
    out: str
    catalog: str = ""
    catalog_rows: int = 0  # rows in the gathered catalog, skipped tiles included
    tiles_total: int = 0
    tiles_done: int = 0
    tiles_skipped: int = 0  # finished by an earlier run with the same run id
    tiles_empty: int = 0
    tiles_failed: dict[str, str] = field(default_factory=dict)  # tile id -> reason
    sources_in: int = 0  # detected / catalogued sources owned by the tiles processed
    sources_out: int = 0  # rows written with no flag
    sources_flagged: dict[str, int] = field(default_factory=dict)  # flag name -> rows
    rows_flagged: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # busy seconds per stage
    sources_per_second: dict[str, float] = field(default_factory=dict)
    model_hashes: dict[str, str] = field(default_factory=dict)
    spectra: dict[str, Any] = field(default_factory=dict)
    tiles_per_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> tiles

    @property
    def ok(self) -> bool:
        return not self.tiles_failed and not self.spectra.get("error")

    def one_line(self) -> str:
        """The one-line summary printed at the end of a run."""
        failed = len(self.tiles_failed)
        return (
            f"{self.tiles_done} tiles done, {self.tiles_skipped} skipped, {failed} failed; "
            f"{self.sources_in} sources in, {self.sources_in - self.rows_flagged} clean + "
            f"{self.rows_flagged} flagged out; "
            f"{self.sources_per_second.get('end_to_end', 0):.1f} sources/s; "
            f"catalog: {self.catalog_rows} rows in {self.catalog}"
        )


def storage_options_for(cfg: SurveyJobConfig) -> dict[str, Any]:
    """s3fs options: a custom endpoint if configured; credentials stay in the environment."""
    endpoint = cfg.storage_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def _catalog_table(rows: pa.Table) -> pa.Table:
    """Model-stage rows -> a catalog table in the documented schema (units, descriptions)."""
    from galscale import catalog

    return catalog.to_table({name: rows.column(name).to_numpy(zero_copy_only=False)
                             for name in rows.column_names})


def _empty_catalog() -> pa.Table:
    from galscale import catalog
    from galscale.pipeline.inference import PROBABILITY_COLUMNS

    return catalog.catalog_schema(
        extra=[pa.field(c, pa.float32()) for c in PROBABILITY_COLUMNS]).empty_table()


def tile_stage_memory(cfg: SurveyJobConfig, n_bands: int) -> int:
    """Bytes one tile task needs: the tile's science + error pixels of every band, about five
    copies of them while detecting and cutting (measured: 1.2 GiB for a 2048-px, 7-band tile), plus the worker's own ~256 MiB. Declaring it
    lets Ray pack tile tasks safely, and (since the model stage declares none) keeps the CPU
    and model stages separate operators that overlap instead of being fused into one."""
    return int(cfg.tiling.tile_size**2 * n_bands * 2 * 4 * 5 + (256 << 20))


def _tile_items(tiles: list[Tile]) -> list[dict[str, Any]]:
    return [asdict(tile) for tile in tiles]


def _count_flags(table: pa.Table, summary: RunSummary) -> None:
    from galscale.survey.flags import Flag

    flags = np.asarray(table.column("flags"), dtype=np.int64)
    summary.rows_flagged += int(np.count_nonzero(flags))
    for flag in Flag:
        n = int(np.count_nonzero(flags & int(flag)))
        if n:
            summary.sources_flagged[flag.name.lower()] = (
                summary.sources_flagged.get(flag.name.lower(), 0) + n
            )


def model_threads(cfg: SurveyJobConfig) -> int:
    """torch threads per model actor: `cfg.model_threads`, or when 0, the CPUs of the smallest
    node if there is one model actor (it then has the node's cores to itself apart from the
    light tile tasks; Ray alone would give it `cpus_per_model_actor` threads), else
    `cpus_per_model_actor`. Needs a running Ray."""
    import ray

    if cfg.model_threads:
        return cfg.model_threads
    if cfg.num_model_actors == 1:
        cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
        cpus = [c for c in cpus if c >= 1]
        if cpus:
            return int(min(cpus))
    return max(1, round(cfg.cpus_per_model_actor))


def run_survey_job(cfg: SurveyJobConfig, *, progress: bool = True) -> RunSummary:
    """Run (or resume) the survey job described by `cfg`; returns its summary.

    Uses the running Ray instance, or starts a local one (RAY_ADDRESS is honoured).
    """
    import ray
    from tqdm import tqdm

    from galscale import catalog
    from galscale.pipeline.inference import SurveyModels, model_hashes

    started = time.perf_counter()
    options = storage_options_for(cfg)
    survey = open_survey(cfg.survey, storage_options=options)
    tiles = tiles_for(survey.shape, cfg.tiling)
    finished = catalog.finished_tiles(cfg.out, cfg.run_id, storage_options=options)
    pending = [t for t in tiles if t.tile_id not in finished]
    if cfg.max_tiles:
        pending = pending[: cfg.max_tiles]
    hashes = model_hashes(cfg)
    provenance = catalog.provenance_record(
        survey=cfg.survey, run_id=cfg.run_id, model_hashes=hashes,
        config_json=json.dumps(to_json_dict(cfg), sort_keys=True))
    summary = RunSummary(run_id=cfg.run_id, survey=cfg.survey, out=cfg.out,
                         tiles_total=len(tiles), tiles_skipped=len(finished & {t.tile_id for t in tiles}),
                         model_hashes=hashes)
    log.info("%d tiles, %d already finished, %d to do", len(tiles), summary.tiles_skipped,
             len(pending))

    tile_seconds = model_seconds = 0.0
    if pending:
        if not ray.is_initialized():
            # RAY_ADDRESS (set inside `ray job submit`) joins that cluster; otherwise a fresh
            # local instance, never a stale cluster left in /tmp/ray by another process
            ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
        # --device cuda always asks for GPUs (an autoscaling cluster then adds GPU nodes);
        # auto uses them when the cluster has some now
        use_gpu = cfg.device == "cuda" or (
            cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        cfg = replace(cfg, model_threads=model_threads(cfg))
        board = ray.remote(num_cpus=0)(TileStatusBoard).remote()
        dataset = (
            ray.data.from_items(_tile_items(pending), override_num_blocks=len(pending))
            .map_batches(process_tile, batch_size=1, num_cpus=1,
                         memory=tile_stage_memory(cfg, len(survey.bands)),
                         fn_kwargs={"survey": survey, "cfg": cfg, "board": board})
            .map_batches(SurveyModels, fn_constructor_kwargs={"cfg": cfg},
                         batch_size=cfg.batch_size,
                         compute=ray.data.ActorPoolStrategy(size=cfg.num_model_actors),
                         num_cpus=cfg.cpus_per_model_actor, num_gpus=1 if use_gpu else 0)
        )
        ledger = TileLedger()
        bar = tqdm(total=len(pending), desc="tiles with sources written", unit="tile",
                   disable=not progress)
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            for tile in ledger.add(batch):
                catalog.write_tile_catalog(_catalog_table(tile.table), cfg.out, cfg.run_id,
                                           tile.tile_id, provenance, storage_options=options)
                model_seconds += tile.model_seconds
                summary.tiles_done += 1
                summary.sources_in += tile.table.num_rows
                _count_flags(tile.table, summary)
                bar.update(1)
        outcomes = ray.get(board.snapshot.remote())
        for tile in pending:
            outcome = outcomes.get(tile.tile_id)
            tile_seconds += outcome.seconds if outcome else 0.0
            if outcome is not None and outcome.node_id:
                nodes = summary.tiles_per_node
                nodes[outcome.node_id] = nodes.get(outcome.node_id, 0) + 1
            if tile.tile_id in ledger.completed_ids:
                continue
            if outcome is not None and outcome.status == STATUS_EMPTY:
                catalog.write_tile_catalog(_empty_catalog(), cfg.out, cfg.run_id, tile.tile_id,
                                           provenance, storage_options=options)
                summary.tiles_done += 1
                summary.tiles_empty += 1
                bar.update(1)
                continue
            if outcome is None:
                reason = "the tile stage never reported (its worker was lost?)"
            elif outcome.status == STATUS_FAILED:
                reason = outcome.error
            else:
                reason = f"only {ledger.incomplete.get(tile.tile_id, 0)} of {outcome.n_sources} rows reached the writer"
            summary.tiles_failed[tile.tile_id] = reason
            catalog.record_failed_tile(cfg.out, cfg.run_id, tile.tile_id, reason,
                                       storage_options=options)
        bar.close()

    summary.sources_out = summary.sources_in - summary.rows_flagged
    joined = None
    if "spectra" in cfg.stages:
        from galscale.pipeline.spectra import run_spectral_stage, spectral_join

        summary.spectra = run_spectral_stage(cfg, storage_options=options)
        joined = spectral_join(summary.spectra, options)
    summary.catalog = catalog.write_survey_catalog(cfg.out, cfg.run_id, storage_options=options,
                                                   transform=joined)
    summary.catalog_rows = sum(m.get("rows", 0) for m in catalog.read_manifests(
        cfg.out, cfg.run_id, storage_options=options).values() if m.get("status") == "ok")
    summary.seconds = time.perf_counter() - started
    summary.stage_seconds = {"tiles_and_cutouts": tile_seconds, "models": model_seconds}
    summary.sources_per_second = {
        "end_to_end": summary.sources_in / summary.seconds if summary.seconds else 0.0,
        **{k: summary.sources_in / v for k, v in summary.stage_seconds.items() if v > 0},
    }
    catalog.write_run_summary(cfg.out, cfg.run_id, asdict(summary), storage_options=options)
    return summary


__all__ = ["RunSummary", "run_survey_job", "storage_options_for"]
