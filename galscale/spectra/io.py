"""Reading and writing 1-D prism spectra: DJA/msaexp FITS files and Parquet spectra tables.

The in-memory form is `SpectraBatch`: ids, redshifts and ragged per-spectrum arrays (observed
wavelength in micron, flux and 1-sigma error in uJy). It converts to and from the Parquet
spectra-table schema, which is also what Ray Data hands to `map_batches`:

| column | type | meaning |
| --- | --- | --- |
| `id` | int64 | spectrum id (unique in the table) |
| `z` | float64 | redshift (NaN when unknown: the row is flagged `bad_redshift`) |
| `wave` | list<float64> | observed wavelength, micron, increasing |
| `flux` | list<float64> | f_nu, uJy (NaN where not measured) |
| `err` | list<float64> | 1-sigma error, uJy (0, NaN or inf where not measured) |
| `population` | string, optional | truth label of simulated spectra |
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPECTRA_SCHEMA = pa.schema([
    ("id", pa.int64()), ("z", pa.float64()), ("wave", pa.list_(pa.float64())),
    ("flux", pa.list_(pa.float64())), ("err", pa.list_(pa.float64())),
])
# Header keywords searched (SPEC1D first, then the primary HDU) for a redshift.
REDSHIFT_KEYWORDS: tuple[str, ...] = ("Z", "REDSHIFT", "ZSPEC", "Z_SPEC", "ZBEST")


class SpectraFormatError(ValueError):
    """A spectra file or table does not have the expected layout."""


@dataclass
class SpectraBatch:
    """Spectra with per-row arrays; `wave`, `flux`, `err` are sequences of 1-D arrays."""

    ids: np.ndarray
    z: np.ndarray
    wave: Sequence[np.ndarray]
    flux: Sequence[np.ndarray]
    err: Sequence[np.ndarray]
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. truth "population"

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.z = np.asarray(self.z, dtype=np.float64)
        n = self.ids.size
        for name in ("z", "wave", "flux", "err"):
            if len(getattr(self, name)) != n:
                raise SpectraFormatError(f"{name} has {len(getattr(self, name))} rows, ids has {n}")

    def __len__(self) -> int:
        return int(self.ids.size)

    def to_table(self) -> pa.Table:
        """Arrow table in the spectra-table schema (plus extra columns)."""
        cols = {
            "id": pa.array(self.ids, pa.int64()),
            "z": pa.array(self.z, pa.float64()),
            "wave": pa.array([np.asarray(w, np.float64) for w in self.wave], pa.list_(pa.float64())),
            "flux": pa.array([np.asarray(f, np.float64) for f in self.flux], pa.list_(pa.float64())),
            "err": pa.array([np.asarray(e, np.float64) for e in self.err], pa.list_(pa.float64())),
        }
        for key, values in self.extra.items():
            cols[key] = pa.array(values)
        return pa.table(cols)

    def take(self, rows: np.ndarray) -> SpectraBatch:
        """A new batch with the given row indices."""
        rows = np.asarray(rows)
        return SpectraBatch(
            ids=self.ids[rows], z=self.z[rows], wave=[self.wave[i] for i in rows],
            flux=[self.flux[i] for i in rows], err=[self.err[i] for i in rows],
            extra={k: np.asarray(v)[rows] for k, v in self.extra.items()},
        )


def batch_from_columns(columns: dict[str, np.ndarray] | pa.Table) -> SpectraBatch:
    """SpectraBatch from an Arrow table or a dict of columns (Ray Data numpy batch)."""
    if isinstance(columns, pa.Table):
        names = columns.column_names
        get = {n: columns.column(n) for n in names}
        missing = {"id", "wave", "flux", "err"} - set(names)
        if missing:
            raise SpectraFormatError(f"spectra table lacks columns {sorted(missing)}; has {names}")
        flat = {n: _list_column(get[n]) for n in ("wave", "flux", "err")}
        z = get["z"].to_numpy(zero_copy_only=False) if "z" in names else np.full(len(columns), np.nan)
        extra = {n: get[n].to_numpy(zero_copy_only=False) for n in names
                 if n not in ("id", "z", "wave", "flux", "err")}
        return SpectraBatch(ids=get["id"].to_numpy(zero_copy_only=False), z=z, extra=extra, **flat)
    missing = {"id", "wave", "flux", "err"} - set(columns)
    if missing:
        raise SpectraFormatError(f"spectra batch lacks columns {sorted(missing)}; has {sorted(columns)}")
    n = len(columns["id"])
    z = columns["z"] if "z" in columns else np.full(n, np.nan)
    return SpectraBatch(
        ids=columns["id"], z=np.asarray(z, dtype=np.float64),
        wave=_rows(columns["wave"]), flux=_rows(columns["flux"]), err=_rows(columns["err"]),
        extra={k: np.asarray(v) for k, v in columns.items()
               if k not in ("id", "z", "wave", "flux", "err")},
    )


def _rows(values: np.ndarray | Sequence) -> list[np.ndarray]:
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.dtype != object:
        return list(values.astype(np.float64, copy=False))
    return [np.asarray(v, dtype=np.float64) for v in values]


def _list_column(col: pa.ChunkedArray) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for chunk in col.chunks:  # flatten() and value_lengths() respect slices (Ray Data batches)
        values = chunk.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        lengths = chunk.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        out.extend(np.split(values, np.cumsum(lengths)[:-1]))
    return out


def read_spectra_parquet(
    path: str | os.PathLike[str],
    catalog: str | os.PathLike[str] | None = None,
    id_column: str = "id",
    z_column: str = "z",
) -> SpectraBatch:
    """Read a Parquet spectra table; redshifts come from `z_column`, or from a `catalog`
    Parquet file (columns `id_column`, `z_column`) joined on id. Ids absent from the catalog
    get z = NaN (flagged later, not dropped)."""
    table = pq.read_table(path)
    if id_column != "id" and id_column in table.column_names:
        table = table.rename_columns(["id" if c == id_column else c for c in table.column_names])
    batch = batch_from_columns(table)
    if catalog is not None:
        batch.z = redshifts_from_catalog(batch.ids, catalog, id_column, z_column)
    elif z_column != "z":
        if z_column not in table.column_names:
            raise SpectraFormatError(f"{path} has no redshift column {z_column!r}")
        batch.z = table.column(z_column).to_numpy(zero_copy_only=False).astype(np.float64)
    return batch


def redshifts_from_catalog(
    ids: np.ndarray, catalog: str | os.PathLike[str], id_column: str = "id", z_column: str = "z"
) -> np.ndarray:
    """Redshift per id from a Parquet catalog (NaN where the id is missing)."""
    cat = pq.read_table(catalog, columns=[id_column, z_column])
    cat_ids = cat.column(id_column).to_numpy(zero_copy_only=False).astype(np.int64)
    cat_z = cat.column(z_column).to_numpy(zero_copy_only=False).astype(np.float64)
    lookup = dict(zip(cat_ids.tolist(), cat_z.tolist(), strict=True))
    return np.array([lookup.get(int(i), np.nan) for i in ids], dtype=np.float64)


def write_spectra_parquet(batch: SpectraBatch, path: str | os.PathLike[str]) -> Path:
    """Write a spectra table (schema in this module's docstring)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(batch.to_table(), out)
    return out


def read_msaexp_fits(
    path: str | os.PathLike[str], z: float | None = None, spec_id: int = 0
) -> SpectraBatch:
    """Read one DJA / msaexp spectrum (`SPEC1D` table: wave [um], flux, err [uJy]).

    The redshift is `z` when given, else the first of REDSHIFT_KEYWORDS found in the SPEC1D or
    primary header, else NaN (the spectrum will be flagged `bad_redshift`).
    """
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        if "SPEC1D" not in hdul:
            raise SpectraFormatError(f"{path}: no SPEC1D extension (found {[h.name for h in hdul]})")
        hdu = hdul["SPEC1D"]
        names = [c.lower() for c in hdu.columns.names]
        for col in ("wave", "flux", "err"):
            if col not in names:
                raise SpectraFormatError(f"{path}: SPEC1D lacks column {col!r} (has {names})")
        unit = (hdu.columns["wave"].unit or "um").strip().lower()
        scale = {"um": 1.0, "micron": 1.0, "angstrom": 1e-4, "a": 1e-4, "nm": 1e-3}.get(unit)
        if scale is None:
            raise SpectraFormatError(f"{path}: unsupported wavelength unit {unit!r}")
        data = hdu.data
        wave = np.asarray(data["wave"], dtype=np.float64) * scale
        flux = np.asarray(data["flux"], dtype=np.float64)
        err = np.asarray(data["err"], dtype=np.float64)
        if z is None:
            z = np.nan
            for header in (hdu.header, hdul[0].header):
                found = [header[k] for k in REDSHIFT_KEYWORDS if k in header]
                if found:
                    z = float(found[0])
                    break
    return SpectraBatch(ids=[spec_id], z=[z], wave=[wave], flux=[flux], err=[err])


def concat_batches(batches: Sequence[SpectraBatch]) -> SpectraBatch:
    """One batch from several (ids must stay unique: the caller's responsibility)."""
    keys = set.intersection(*(set(b.extra) for b in batches)) if batches else set()
    return SpectraBatch(
        ids=np.concatenate([b.ids for b in batches]),
        z=np.concatenate([b.z for b in batches]),
        wave=[w for b in batches for w in b.wave],
        flux=[f for b in batches for f in b.flux],
        err=[e for b in batches for e in b.err],
        extra={k: np.concatenate([b.extra[k] for b in batches]) for k in keys},
    )


def simulated_batch(sim) -> SpectraBatch:  # sim: galscale.sim.spectra.SimulatedSpectra
    """SpectraBatch view of simulated spectra (truth kept in extra['population'])."""
    n = len(sim)
    return SpectraBatch(
        ids=sim.ids, z=sim.z, wave=[sim.wave_um] * n, flux=list(sim.flux), err=list(sim.err),
        extra={"population": sim.population.astype(str)},
    )


__all__ = [
    "SPECTRA_SCHEMA", "REDSHIFT_KEYWORDS", "SpectraFormatError", "SpectraBatch",
    "batch_from_columns", "read_spectra_parquet", "redshifts_from_catalog",
    "write_spectra_parquet", "read_msaexp_fits", "concat_batches", "simulated_batch",
]
