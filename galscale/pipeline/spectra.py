"""The spectral stage of the survey job: embed spectra with the persisted model, join by id.

Spectra (a Parquet table with columns id, z, wave, flux, err; or a folder of DJA/msaexp
`.spec.fits` files) stream through a Ray Data actor pool that loads the fitted spectral
embedding once per actor (`galscale.spectra.model.SpectralEmbedder`): preprocess, encode, UMAP
transform, Gaussian-mixture assignment, with no refitting. The spectral catalog is written to
`<out>/<run_id>/spectra.parquet` and its cluster columns are joined to the survey catalog by
`source_id` = spectrum `id`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from galscale.config import SurveyJobConfig

SPECTRA_FILE = "spectra.parquet"
# spectral-catalog column -> survey-catalog column
JOINED_COLUMNS = {
    "redshift": "spec_redshift", "cluster": "spec_cluster", "cluster_prob": "spec_cluster_prob",
    "umap_x": "spec_umap_x", "umap_y": "spec_umap_y", "recon_mse": "spec_recon_mse",
    "flags": "spec_flags", "flag_reason": "spec_flag_reason",
}


def _spectra_dataset(cfg: SurveyJobConfig, storage_options: Mapping[str, Any]):
    import ray

    from galscale.spectra.io import read_msaexp_fits, redshifts_from_catalog
    from galscale.survey.store import open_fs

    fs, path = open_fs(cfg.spectra, storage_options)
    if fs.isdir(path) and not any(p.endswith(".parquet") for p in fs.ls(path, detail=False)):
        files = sorted(p for p in fs.ls(path, detail=False) if p.endswith((".fits", ".fits.gz")))
        if not files:
            raise FileNotFoundError(f"{cfg.spectra}: no .parquet or .spec.fits spectra found")
        tables = []
        for index, name in enumerate(files):  # small collections: read on the driver
            with fs.open(name, "rb") as fh:
                batch = read_msaexp_fits(io.BytesIO(fh.read()), spec_id=index)
            if cfg.spectra_redshifts:
                batch.z = redshifts_from_catalog(batch.ids, cfg.spectra_redshifts)
            tables.append(batch.to_table())
        return ray.data.from_arrow(pa.concat_tables(tables))
    return ray.data.read_parquet(path, filesystem=fs)


def run_spectral_stage(cfg: SurveyJobConfig,
                       storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Embed and assign every spectrum; write the spectral catalog. Returns counts and paths."""
    import ray

    from galscale import catalog
    from galscale.spectra.model import SpectralEmbedder

    options = dict(storage_options or {})
    try:
        dataset = _spectra_dataset(cfg, options).map_batches(
            SpectralEmbedder, fn_constructor_kwargs={"model": cfg.spectral},
            batch_size=4096, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1),
        )
        parts = list(dataset.iter_batches(batch_format="pyarrow", batch_size=None))
    except Exception as exc:  # the imaging catalog is still written; the run reports this
        return {"error": f"{type(exc).__name__}: {exc}"}
    table = pa.concat_tables(parts) if parts else pa.table({"id": pa.array([], pa.int64())})
    table = table.sort_by("id") if table.num_rows else table
    url = catalog.run_path(cfg.out, cfg.run_id) + "/" + SPECTRA_FILE
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    catalog.put_bytes(url, buffer.getvalue(), options)
    clusters = np.asarray(table.column("cluster")) if table.num_rows else np.zeros(0)
    return {
        "catalog": url,
        "spectra_in": table.num_rows,
        "assigned": int((clusters >= 0).sum()),
        "flagged": int((clusters < 0).sum()),
        "clusters": {int(k): int(v) for k, v in zip(*np.unique(clusters[clusters >= 0],
                                                               return_counts=True), strict=True)},
    }


def join_spectral_columns(survey_catalog: pa.Table, spectral: pa.Table) -> pa.Table:
    """Left-join the spectral cluster columns onto the survey catalog by source_id == id."""
    ids = np.asarray(survey_catalog.column("source_id"))
    lookup = {int(i): k for k, i in enumerate(np.asarray(spectral.column("id")))}
    rows = np.array([lookup.get(int(i), -1) for i in ids], dtype=np.int64)
    have = rows >= 0
    out = survey_catalog
    for source, target in JOINED_COLUMNS.items():
        column = spectral.column(source).to_numpy(zero_copy_only=False)
        taken = column[np.where(have, rows, 0)] if len(column) else np.zeros(len(ids), column.dtype)
        out = out.append_column(target, pa.array(taken, mask=~have))
    return out


def spectral_join(result: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None):
    """A catalog transform joining the spectral catalog written by `run_spectral_stage`
    (None when that stage failed)."""
    from galscale import catalog

    if "catalog" not in result:
        return None
    spectral = pq.read_table(io.BytesIO(catalog.get_bytes(result["catalog"], storage_options)))
    return lambda table: join_spectral_columns(table, spectral)
