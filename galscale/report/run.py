"""A finished survey run folder, read for the report: summary, provenance, catalog columns.

Reads only what the report needs: `summary.json`, the catalog's Parquet footer (schema, row
count, provenance) and the columns asked for (pyarrow column projection), so a 1-million-row
catalog costs a few column reads, never the whole table. Works on local paths and s3:// URLs
(storage options as for `galscale.survey.store.open_fs`).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from galscale.catalog import CATALOG_FILE, PROVENANCE_KEY
from galscale.survey.store import is_remote, open_fs

SUMMARY_FILE = "summary.json"
SPECTRA_FILE = "spectra.parquet"  # written by galscale.pipeline.spectra
TRUTH_FILE = "truth.parquet"


class RunFolderError(FileNotFoundError):
    """The folder is not a finished galscale run (no catalog.parquet)."""


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


@dataclass
class RunFolder:
    """Handle on `<out>/<run_id>`: what is there, and column reads from its Parquet files."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None  # summary.json, None when absent
    provenance: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the job's SurveyJobConfig as JSON
    columns: list[str] = field(default_factory=list)  # catalog column names
    num_rows: int = 0
    has_spectra: bool = False  # spectra.parquet present

    @property
    def catalog_url(self) -> str:
        return _join(self.url, CATALOG_FILE)

    @property
    def spectra_url(self) -> str:
        return _join(self.url, SPECTRA_FILE)

    def _fs(self, url: str):
        return open_fs(url, self.storage_options)

    def exists(self, url: str) -> bool:
        fs, path = self._fs(url)
        return bool(fs.exists(path))

    def read_columns(self, names: Iterable[str], url: str | None = None) -> pa.Table:
        """The named columns of the catalog (or of the Parquet file `url`) that exist."""
        url = url or self.catalog_url
        fs, path = self._fs(url)
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            present = set(pf.schema_arrow.names)
            wanted = [n for n in dict.fromkeys(names) if n in present]
            return pf.read(columns=wanted)

    def spectra_columns(self) -> list[str]:
        if not self.has_spectra:
            return []
        fs, path = self._fs(self.spectra_url)
        with fs.open(path, "rb") as fh:
            return list(pq.ParquetFile(fh).schema_arrow.names)


def open_run(url: str, storage_options: Mapping[str, Any] | None = None) -> RunFolder:
    """Open a run folder (local path or s3:// URL); raises `RunFolderError` if it has no catalog."""
    url = url.rstrip("/") if is_remote(url) else posixpath.normpath(url)
    run = RunFolder(url=url, storage_options=dict(storage_options or {}))
    fs, cat_path = open_fs(run.catalog_url, run.storage_options)
    if not fs.exists(cat_path):
        raise RunFolderError(
            f"{url} is not a finished galscale run: {CATALOG_FILE} is missing (give the "
            f"<out>/<run_id> folder written by `galscale classify`)")
    with fs.open(cat_path, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
        schema = meta.schema.to_arrow_schema()
    run.columns = list(schema.names)
    run.num_rows = int(meta.num_rows)
    raw = (schema.metadata or {}).get(PROVENANCE_KEY)
    if raw:
        run.provenance = json.loads(raw)
        try:
            run.config = json.loads(run.provenance.get("config") or "{}")
        except json.JSONDecodeError:
            run.config = {}
    summary_fs, summary_path = open_fs(_join(url, SUMMARY_FILE), run.storage_options)
    if summary_fs.exists(summary_path):
        run.summary = json.loads(summary_fs.cat_file(summary_path))
    run.has_spectra = run.exists(run.spectra_url)
    return run


def resolve_truth_url(run: RunFolder, truth: str | None = None) -> str | None:
    """The truth catalog of a simulated survey, or None for a real one.

    Order: the explicit `truth`; the survey's `truth` attribute (relative to the survey
    store, e.g. "../truth.parquet"); `truth.parquet` next to the survey store.
    """
    if truth:
        return truth
    survey_url = run.provenance.get("survey") or run.config.get("survey")
    if not survey_url:
        return None
    candidates = []
    try:
        from galscale.survey.store import open_survey

        pointer = open_survey(survey_url, run.storage_options).attrs.get("truth")
        if pointer:
            candidates.append(posixpath.normpath(_join(survey_url, pointer))
                              if not is_remote(pointer) else pointer)
    except Exception:  # the survey may be gone; the report then says "no truth"
        pass
    candidates.append(_join(posixpath.dirname(survey_url.rstrip("/")), TRUTH_FILE))
    for url in candidates:
        if url.startswith("s3:/") and not url.startswith("s3://"):
            url = "s3://" + url[len("s3:/"):]
        try:
            if run.exists(url):
                return url
        except Exception:
            continue
    return None


def read_parquet_columns(url: str, names: Iterable[str] | None,
                         storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Read (some columns of) a Parquet file at a local path or s3:// URL."""
    fs, path = open_fs(url, storage_options)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        if names is None:
            return pf.read()
        present = set(pf.schema_arrow.names)
        return pf.read(columns=[n for n in dict.fromkeys(names) if n in present])


__all__ = ["RunFolder", "RunFolderError", "open_run", "resolve_truth_url",
           "read_parquet_columns", "SUMMARY_FILE", "SPECTRA_FILE"]
