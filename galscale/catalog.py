"""Catalog schema, per-tile Parquet writing with manifests, provenance, and gathering.

Run folder layout (local path or s3:// prefix `out`):

    <out>/<run_id>/tiles/<tile_id>.parquet     one file per finished tile (deterministic name)
    <out>/<run_id>/manifest/<tile_id>.json     written after the tile file: marks it finished
                                               ({"status": "ok", rows, file, sha256}) or failed
                                               ({"status": "failed", "error": ...})
    <out>/<run_id>/catalog.parquet             survey catalog gathered from the tile files
    <out>/<run_id>/summary.json                run summary (pipeline)

A tile file is written atomically (local: temporary file + os.replace; S3: one object PUT, which
is atomic), then its manifest; so a tile is finished if and only if its manifest says "ok".
Provenance (galscale version, configuration JSON, survey URL, run id, model hashes, ...) is stored
as JSON in the Parquet key-value metadata under `galscale.provenance`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from galscale.config import NIRCAM_BANDS

PROVENANCE_KEY = b"galscale.provenance"
CATALOG_FILE = "catalog.parquet"
STATUS_OK = "ok"
STATUS_FAILED = "failed"


def _f(name: str, typ: pa.DataType, unit: str, doc: str) -> pa.Field:
    return pa.field(name, typ, metadata={"unit": unit, "description": doc})


def catalog_schema(bands: Sequence[str] = NIRCAM_BANDS,
                   extra: Iterable[pa.Field] = ()) -> pa.Schema:
    """The catalog's Arrow schema: fixed columns, per-band photometry, then `extra` fields.

    Model stages append their columns (p_disk, p_low_z, p_high_z, p_brown_dwarf, spectral
    cluster columns, ...) as `extra`; `to_table` also accepts unknown columns and appends them.
    """
    fields = [
        _f("source_id", pa.int64(), "", "deterministic survey-unique id: "
           "(py * nx + px) * 8 + k, (px, py) the centroid's nearest pixel"),
        _f("tile_id", pa.string(), "", "tile that owns the source"),
        _f("ra", pa.float64(), "deg", "right ascension (ICRS) of the centroid"),
        _f("dec", pa.float64(), "deg", "declination (ICRS) of the centroid"),
        _f("x", pa.float64(), "pix", "0-based survey column of the centroid (pixel centres "
           "at integers)"),
        _f("y", pa.float64(), "pix", "0-based survey row of the centroid"),
    ]
    for b in bands:
        fields += [
            _f(f"flux_{b}", pa.float64(), "survey bunit", f"{b} AUTO (Kron) flux"),
            _f(f"flux_err_{b}", pa.float64(), "survey bunit", f"{b} 1-sigma flux error"),
            _f(f"mag_{b}", pa.float64(), "mag(AB)", f"{b} AB magnitude (NaN if flux <= 0)"),
        ]
    fields += [
        _f("flux_radius", pa.float64(), "pix", "half-light radius on the detection stack"),
        _f("snr", pa.float64(), "", "signal-to-noise of the detection-stack AUTO flux"),
        _f("flags", pa.int64(), "", "bit mask of galscale.survey.flags.Flag"),
        _f("flag_reason", pa.string(), "", "'; '-joined 'flag: detail' reasons"),
        _f("masked_fraction", pa.float64(), "", "padded fraction of the 7-band cutout"),
    ]
    names = {f.name for f in fields}
    return pa.schema(fields + [f for f in extra if f.name not in names])


def to_table(columns: Mapping[str, Any], bands: Sequence[str] = NIRCAM_BANDS,
             drop: Iterable[str] = ("multiband_flux", "multiband_err", "morph_cutout")) -> pa.Table:
    """Dict of NumPy columns -> Arrow table in schema order (1-D extra columns appended).

    Missing schema columns raise (a catalog never silently lacks a documented column).
    """
    schema = catalog_schema(bands)
    drop = set(drop)
    missing = [f.name for f in schema if f.name not in columns]
    if missing:
        raise KeyError(f"catalog columns missing: {missing}")
    arrays, fields = [], []
    for f in schema:
        arrays.append(pa.array(np.asarray(columns[f.name]).tolist()
                               if pa.types.is_string(f.type) else columns[f.name], type=f.type))
        fields.append(f)
    for name, col in columns.items():
        if name in drop or name in schema.names:
            continue
        arr = pa.array(col.tolist() if isinstance(col, np.ndarray) and col.dtype == object
                       else col)
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# ---------------------------------------------------------------------------------------------
# files


def _fs(url: str, storage_options: Mapping[str, Any] | None):
    from galscale.survey.store import open_fs

    return open_fs(url, storage_options)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))


def run_path(out_url: str, run_id: str) -> str:
    """<out>/<run_id>."""
    return _join(out_url, run_id)


def tile_file(out_url: str, run_id: str, tile_id: str) -> str:
    """Deterministic location of a tile's catalog file."""
    return _join(out_url, run_id, "tiles", f"{tile_id}.parquet")


def manifest_file(out_url: str, run_id: str, tile_id: str) -> str:
    return _join(out_url, run_id, "manifest", f"{tile_id}.json")


def _put_bytes(url: str, data: bytes, storage_options: Mapping[str, Any] | None) -> None:
    """Write `data` at `url` atomically: temp + os.replace locally, a single PUT on S3."""
    from galscale.survey.store import is_remote

    fs, path = _fs(url, storage_options)
    if not is_remote(url):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def _get_bytes(url: str, storage_options: Mapping[str, Any] | None) -> bytes:
    fs, path = _fs(url, storage_options)
    return fs.cat_file(path)


def _parquet_bytes(table: pa.Table, provenance: Mapping[str, Any]) -> bytes:
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(dict(provenance), sort_keys=True, default=str).encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
    return buf.getvalue()


def provenance_record(*, survey: str, run_id: str, config_json: str = "",
                      model_hashes: Mapping[str, str] | None = None,
                      **extra: Any) -> dict[str, Any]:
    """Standard provenance dict: galscale version, survey URL, run id, config, model hashes."""
    from galscale import __version__

    rec = {"galscale_version": __version__, "survey": survey, "run_id": run_id,
           "config": config_json, "model_hashes": dict(model_hashes or {})}
    rec.update(extra)
    return rec


def write_tile_catalog(table: pa.Table, out_url: str, run_id: str, tile_id: str,
                       provenance: Mapping[str, Any],
                       storage_options: Mapping[str, Any] | None = None) -> str:
    """Write one tile's catalog atomically, then its "ok" manifest. Returns the file URL.

    Rewriting a tile replaces both (idempotent reruns). The `galscale_version`, `run_id` and
    `tile_id` are added to the provenance if absent.
    """
    from galscale import __version__

    prov = {"galscale_version": __version__, "run_id": run_id, **dict(provenance),
            "tile_id": tile_id}
    data = _parquet_bytes(table, prov)
    url = tile_file(out_url, run_id, tile_id)
    _put_bytes(url, data, storage_options)
    manifest = {"tile_id": tile_id, "status": STATUS_OK, "rows": table.num_rows,
                "file": f"tiles/{tile_id}.parquet", "sha256": hashlib.sha256(data).hexdigest()}
    _put_bytes(manifest_file(out_url, run_id, tile_id),
               json.dumps(manifest, sort_keys=True).encode(), storage_options)
    return url


def record_failed_tile(out_url: str, run_id: str, tile_id: str, error: str,
                       storage_options: Mapping[str, Any] | None = None) -> None:
    """Mark a tile failed (with its reason) in the manifest; it is retried on the next run."""
    manifest = {"tile_id": tile_id, "status": STATUS_FAILED, "error": str(error)}
    _put_bytes(manifest_file(out_url, run_id, tile_id),
               json.dumps(manifest, sort_keys=True).encode(), storage_options)


def read_manifests(out_url: str, run_id: str,
                   storage_options: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """tile_id -> manifest dict for every manifest of the run."""
    fs, path = _fs(_join(out_url, run_id, "manifest"), storage_options)
    try:
        names = [p for p in fs.ls(path, detail=False) if p.endswith(".json")]
    except FileNotFoundError:
        return {}
    out = {}
    for p in sorted(names):
        m = json.loads(fs.cat_file(p))
        out[m["tile_id"]] = m
    return out


def finished_tiles(out_url: str, run_id: str = "run",
                   storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """Ids of tiles whose manifest says "ok" (their catalog file is complete)."""
    return {t for t, m in read_manifests(out_url, run_id, storage_options).items()
            if m.get("status") == STATUS_OK}


def failed_tiles(out_url: str, run_id: str = "run",
                 storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """tile_id -> error of tiles recorded as failed."""
    return {t: m.get("error", "") for t, m in read_manifests(out_url, run_id,
                                                             storage_options).items()
            if m.get("status") == STATUS_FAILED}


def read_provenance(url: str, storage_options: Mapping[str, Any] | None = None) -> dict:
    """Provenance dict stored in a galscale Parquet file."""
    meta = pq.read_schema(io.BytesIO(_get_bytes(url, storage_options))).metadata or {}
    if PROVENANCE_KEY not in meta:
        raise KeyError(f"{url} has no galscale provenance")
    return json.loads(meta[PROVENANCE_KEY])


def gather_catalog(out_url: str, run_id: str = "run",
                   storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Concatenate the finished tile files (tile-id order, then source_id) into one table.

    Checks each file against its manifest (sha256, rows) and that no source_id repeats; raises
    ValueError naming the tile otherwise.
    """
    manifests = read_manifests(out_url, run_id, storage_options)
    tables, prov = [], None
    for tile_id in sorted(manifests):
        m = manifests[tile_id]
        if m.get("status") != STATUS_OK:
            continue
        data = _get_bytes(_join(out_url, run_id, m["file"]), storage_options)
        if hashlib.sha256(data).hexdigest() != m["sha256"]:
            raise ValueError(f"tile {tile_id}: catalog file does not match its manifest sha256")
        t = pq.read_table(io.BytesIO(data))
        if t.num_rows != m["rows"]:
            raise ValueError(f"tile {tile_id}: {t.num_rows} rows, manifest says {m['rows']}")
        if prov is None:
            prov = (t.schema.metadata or {}).get(PROVENANCE_KEY)
        tables.append(t.replace_schema_metadata(None))
    if not tables:
        return catalog_schema().empty_table()
    table = pa.concat_tables(tables, promote_options="permissive")
    ids = table.column("source_id").to_numpy()
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicate source_id in gathered catalog: {uniq[counts > 1][:10]}")
    table = table.sort_by([("tile_id", "ascending"), ("source_id", "ascending")])
    if prov is not None:
        p = json.loads(prov)
        p.pop("tile_id", None)
        p["tiles"] = sorted(t for t, m in manifests.items() if m.get("status") == STATUS_OK)
        table = table.replace_schema_metadata({PROVENANCE_KEY: json.dumps(p, sort_keys=True)})
    return table


def write_survey_catalog(out_url: str, run_id: str = "run",
                         storage_options: Mapping[str, Any] | None = None,
                         transform: Callable[[pa.Table], pa.Table] | None = None) -> str:
    """Gather the tile files and write <out>/<run_id>/catalog.parquet; returns its URL.

    `transform` (e.g. joining spectral-cluster columns by source_id) is applied before writing.
    """
    table = gather_catalog(out_url, run_id, storage_options)
    if transform is not None:
        table = transform(table)
    url = _join(out_url, run_id, CATALOG_FILE)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    try:
        if _get_bytes(url, storage_options) == buf.getvalue():
            return url  # unchanged: a rerun of a finished run rewrites nothing
    except FileNotFoundError:
        pass
    _put_bytes(url, buf.getvalue(), storage_options)
    return url


def write_run_summary(out_url: str, run_id: str, summary: Mapping[str, Any],
                      storage_options: Mapping[str, Any] | None = None) -> str:
    """Write <out>/<run_id>/summary.json (sorted keys); returns its URL."""
    url = _join(out_url, run_id, "summary.json")
    _put_bytes(url, json.dumps(dict(summary), sort_keys=True, indent=1, default=str).encode(),
               storage_options)
    return url


def catalog_differences(got: pa.Table, expected: pa.Table, model_atol: float = 0.0) -> list[str]:
    """How two catalogs differ, row for row and value for value (NaN equals NaN, unlike
    `Table.equals`); provenance metadata is ignored. `model_atol` tolerates that much absolute
    difference in the model probabilities (`p_*`) only: CPU kernels round differently when rows
    are batched differently (e.g. after a node death). An empty list means the same catalog."""
    if got.schema.names != expected.schema.names:
        return [f"columns differ: {got.schema.names} vs {expected.schema.names}"]
    if got.num_rows != expected.num_rows:
        return [f"{got.num_rows} rows vs {expected.num_rows}"]
    problems = []
    for name in expected.schema.names:
        a, b = got[name], expected[name]
        if a.type != b.type:
            problems.append(f"column {name!r}: type {a.type} vs {b.type}")
        elif pa.types.is_floating(b.type):
            x, y = a.to_numpy(), b.to_numpy()
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                problems.append(f"column {name!r}: NaNs differ")
                continue
            diff = float(np.max(np.abs(x - y), initial=0.0, where=~np.isnan(y)))
            if diff > (model_atol if name.startswith("p_") else 0.0):
                problems.append(f"column {name!r} differs by {diff}")
        elif a.to_pylist() != b.to_pylist():
            problems.append(f"column {name!r} differs")
    return problems


# Public names of the byte helpers: other run products (spectral catalog, report) use them.
put_bytes = _put_bytes
get_bytes = _get_bytes

__all__ = [
    "put_bytes", "get_bytes", "catalog_differences", "catalog_schema", "to_table", "write_tile_catalog", "record_failed_tile", "finished_tiles",
    "failed_tiles", "read_manifests", "gather_catalog", "write_survey_catalog",
    "write_run_summary", "read_provenance", "provenance_record", "tile_file", "manifest_file",
    "run_path", "PROVENANCE_KEY", "STATUS_OK", "STATUS_FAILED",
]
