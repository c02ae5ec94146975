"""The galscale survey format: one Zarr v3 group per field, local or on S3.

Layout (see docs/survey-format.md): root attributes carry the band list, shape, pixel scale,
units, AB zero points and the TAN WCS as FITS header cards; `sci/<BAND>` and `err/<BAND>` are
float32 [ny, nx] arrays, chunked and zstd-compressed, NaN where there is no data.

`open_survey` reads metadata only. Pixels are read by region, chunk-aligned, through a store
wrapper that turns a missing chunk key into `MissingChunkError` (Zarr would otherwise hand back
the fill value as if it were data). A `Survey` pickles as (url, storage options) and reopens
lazily, so it is cheap to send to remote workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from galscale.config import NIRCAM_BANDS

FORMAT_VERSION = 1
SCI = "sci"
ERR = "err"
_CARD_SKIP = {"COMMENT", "HISTORY", ""}


class SurveyError(Exception):
    """Base class of survey format and data errors."""


class SurveyFormatError(SurveyError):
    """The store is not a galscale survey, or its metadata is inconsistent."""


class MissingBandError(SurveyError, KeyError):
    """A requested band is not in the survey."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ChunkError(SurveyError):
    """A chunk of a band array is missing or cannot be decoded."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


class MissingChunkError(ChunkError):
    """A chunk key is absent from the store (never presented as fill-value data)."""


class CorruptChunkError(ChunkError):
    """A chunk exists but does not decode."""


class StorageReadError(SurveyError, OSError):
    """The storage could not deliver a key (5xx, throttling, reset, timeout) after its retries.

    Not a `ChunkError`: the data may be fine, so it is never turned into NaN pixels; the tile
    fails with this reason and a rerun retries it.
    """

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


# ---------------------------------------------------------------------------------------------
# storage helpers


def is_remote(url: str) -> bool:
    """True for fsspec URLs with a protocol other than the local file system."""
    return "://" in url and not url.startswith("file://")


# Default S3 retry policy (botocore "standard" mode: 500/502/503/504, throttling such as
# SlowDown, connection resets and timeouts, exponential back-off with jitter, at most 20 s a
# wait). s3fs retries truncated bodies and SlowDown on top (`retries`, back-off 0.1 s * 1.7^i).
# AWS_MAX_ATTEMPTS / AWS_RETRY_MODE in the environment, or `config_kwargs={"retries": ...}` in
# the storage options, override it.
S3_RETRIES = {"mode": "standard", "max_attempts": 5}


def resolve_storage_options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Storage options for `url`; for s3:// adds `endpoint_url` from env AWS_ENDPOINT_URL and
    the retry policy `S3_RETRIES` (unless given).

    Credentials come from the standard AWS environment (or instance roles) via s3fs/botocore.
    """
    opts = dict(storage_options or {})
    if url.startswith("s3://"):
        config_kwargs = dict(opts.get("config_kwargs") or {})
        if "retries" not in config_kwargs:
            config_kwargs["retries"] = {
                "mode": os.environ.get("AWS_RETRY_MODE", S3_RETRIES["mode"]),
                "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS",
                                                   S3_RETRIES["max_attempts"])),
            }
        opts["config_kwargs"] = config_kwargs
    if url.startswith("s3://") and "endpoint_url" not in opts:
        client_kwargs = opts.get("client_kwargs") or {}
        env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if env and "endpoint_url" not in client_kwargs:
            opts["endpoint_url"] = env
    return opts


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def open_fs(url: str, storage_options: Mapping[str, Any] | None = None):
    """(fsspec filesystem, path) for a local path or URL."""
    import fsspec

    if not is_remote(url):
        return fsspec.filesystem("file"), os.path.abspath(_local_path(url))
    return fsspec.core.url_to_fs(url, **resolve_storage_options(url, storage_options))


def _zarr_store(url: str, storage_options: Mapping[str, Any] | None, read_only: bool):
    if not is_remote(url):
        path = _local_path(url)
        if read_only and not os.path.isdir(path):
            raise FileNotFoundError(f"survey not found: {url}")
        return LocalStore(path, read_only=read_only)
    opts = resolve_storage_options(url, storage_options)
    return FsspecStore.from_url(url, storage_options=opts, read_only=read_only)


def _is_chunk_key(key: str) -> bool:
    return "/c/" in key or key.startswith("c/")


class StrictChunkStore(WrapperStore):
    """Read-only wrapper that raises `MissingChunkError` for absent chunk keys, and
    `StorageReadError` when the storage itself fails (so a transport error is never mistaken
    for a corrupt chunk)."""

    async def get(self, key, prototype, byte_range=None):  # noqa: ANN001, ANN201 (zarr API)
        try:
            buf = await self._store.get(key, prototype, byte_range)
        except Exception as exc:
            raise StorageReadError(
                f"reading {key!r} failed after retries: {type(exc).__name__}: {exc}", key
            ) from exc
        if buf is None and _is_chunk_key(key):
            raise MissingChunkError(f"missing Zarr chunk {key!r}", key)
        return buf


# ---------------------------------------------------------------------------------------------
# WCS header cards


def wcs_cards(header: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe dict of FITS header cards (COMMENT/HISTORY dropped, NumPy scalars unwrapped)."""
    out: dict[str, Any] = {}
    for key in list(header.keys()):
        k = str(key).upper()
        if k in _CARD_SKIP:
            continue
        v = header[key]
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (bool, int, float, str)):
            if isinstance(v, float) and not math.isfinite(v):
                continue
            out[k] = v
    return out


def band_order(bands: Iterable[str]) -> list[str]:
    """Bands sorted blue to red (NIRCam order first, unknown bands after, by name)."""
    known = {b: i for i, b in enumerate(NIRCAM_BANDS)}
    return sorted(bands, key=lambda b: (known.get(b, len(known)), b))


# ---------------------------------------------------------------------------------------------
# writing


class SurveyWriter:
    """Create a survey store and fill it block by block (for streaming FITS ingest).

    Blocks should be chunk-aligned (start at multiples of `chunk`) so each chunk is written
    once; every chunk is written, also all-NaN ones, so a missing chunk always means damage.
    """

    def __init__(
        self,
        dest: str,
        bands: Iterable[str],
        shape: tuple[int, int],
        wcs_header: Mapping[str, Any],
        *,
        pixel_scale_arcsec: float,
        zeropoint_ab: Mapping[str, float] | float,
        bunit: Mapping[str, str] | str = "nJy",
        chunk: int = 1024,
        name: str = "",
        attrs: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ):
        bands = band_order(bands)
        if not bands:
            raise SurveyFormatError("a survey needs at least one band")
        if len(set(bands)) != len(bands):
            raise SurveyFormatError(f"duplicate bands: {bands}")
        ny, nx = (int(s) for s in shape)
        if ny <= 0 or nx <= 0:
            raise SurveyFormatError(f"survey shape must be positive, got {shape}")
        if chunk <= 0:
            raise SurveyFormatError(f"chunk must be positive, got {chunk}")
        if pixel_scale_arcsec is None or not pixel_scale_arcsec > 0:
            raise SurveyFormatError(f"pixel_scale_arcsec must be > 0, got {pixel_scale_arcsec}")
        zp = _per_band(zeropoint_ab, bands, "zeropoint_ab")
        bu = _per_band(bunit, bands, "bunit")
        self.dest = dest
        self.bands = bands
        self.shape = (ny, nx)
        self.chunk = int(chunk)
        root_attrs: dict[str, Any] = dict(attrs or {})
        root_attrs.update(
            galscale_survey_format=FORMAT_VERSION,
            bands=bands,
            shape=[ny, nx],
            chunk=int(chunk),
            pixel_scale_arcsec=float(pixel_scale_arcsec),
            bunit={b: str(bu[b]) for b in bands},
            zeropoint_ab={b: float(zp[b]) for b in bands},
            wcs=wcs_cards(wcs_header),
            name=str(name),
        )
        store = _zarr_store(dest, storage_options, read_only=False)
        self._root = zarr.open_group(store=store, mode="w", zarr_format=3, attributes=root_attrs)
        codecs = zarr.codecs.ZstdCodec(level=3)
        cfg = {"write_empty_chunks": True}
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        for kind in (SCI, ERR):
            grp = self._root.require_group(kind)
            for b in bands:
                self._arrays[(kind, b)] = grp.create_array(
                    b, shape=(ny, nx), dtype="float32", chunks=(chunk, chunk),
                    compressors=codecs, fill_value=float("nan"), config=cfg,
                    dimension_names=("y", "x"),
                )

    def write(self, band: str, sci: np.ndarray, err: np.ndarray, y0: int = 0, x0: int = 0) -> None:
        """Write a science block and its error block with top-left corner (y0, x0)."""
        if band not in self.bands:
            raise MissingBandError(f"band {band!r} not in survey bands {self.bands}")
        sci = np.asarray(sci, dtype=np.float32)
        err = np.asarray(err, dtype=np.float32)
        if sci.ndim != 2 or sci.shape != err.shape:
            raise SurveyFormatError(
                f"band {band}: science {sci.shape} and error {err.shape} blocks must be equal 2-D"
            )
        y1, x1 = y0 + sci.shape[0], x0 + sci.shape[1]
        if y0 < 0 or x0 < 0 or y1 > self.shape[0] or x1 > self.shape[1]:
            raise SurveyFormatError(
                f"band {band}: block [{y0}:{y1}, {x0}:{x1}] outside survey shape {self.shape}"
            )
        self._arrays[(SCI, band)][y0:y1, x0:x1] = sci
        self._arrays[(ERR, band)][y0:y1, x0:x1] = err


def _per_band(value: Mapping[str, Any] | Any, bands: list[str], what: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        missing = [b for b in bands if b not in value]
        if missing:
            raise MissingBandError(f"{what} has no entry for bands {missing}")
        return {b: value[b] for b in bands}
    return {b: value for b in bands}


def write_survey(
    dest: str,
    science: Mapping[str, np.ndarray],
    error: Mapping[str, np.ndarray],
    wcs_header: Mapping[str, Any],
    *,
    pixel_scale_arcsec: float,
    zeropoint_ab: Mapping[str, float] | float,
    bunit: str = "nJy",
    chunk: int = 1024,
    name: str = "",
    attrs: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write in-memory mosaics (one 2-D array per band, science and 1-sigma error) as a survey.

    `dest` is a local folder or an s3:// URL (overwritten). All bands must share one shape.
    `zeropoint_ab` is one value or one per band (mag = zp - 2.5 log10(flux in pixel units)).
    `attrs` adds extra root attributes (for example a `truth` pointer).
    """
    if set(science) != set(error):
        raise MissingBandError(
            f"science bands {sorted(science)} and error bands {sorted(error)} differ"
        )
    shapes = {b: np.shape(a) for b, a in science.items()} | {
        f"err/{b}": np.shape(a) for b, a in error.items()
    }
    if len(set(shapes.values())) != 1:
        raise SurveyFormatError(f"all bands must share one pixel grid, got shapes {shapes}")
    shape = next(iter(shapes.values()))
    if len(shape) != 2:
        raise SurveyFormatError(f"band arrays must be 2-D, got shape {shape}")
    writer = SurveyWriter(
        dest, science.keys(), shape, wcs_header, pixel_scale_arcsec=pixel_scale_arcsec,
        zeropoint_ab=zeropoint_ab, bunit=bunit, chunk=chunk, name=name, attrs=attrs,
        storage_options=storage_options,
    )
    for b in writer.bands:
        writer.write(b, science[b], error[b])


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class Survey:
    """An opened survey: metadata in memory, pixels read on demand by region.

    Pickles as (url, storage_options, attrs); the Zarr handles are reopened lazily.
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    _root: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options, "attrs": self.attrs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url = state["url"]
        self.storage_options = state["storage_options"]
        self.attrs = state["attrs"]
        self._root = None

    # --- metadata -----------------------------------------------------------------------
    @property
    def bands(self) -> list[str]:
        return list(self.attrs["bands"])

    @property
    def shape(self) -> tuple[int, int]:
        ny, nx = self.attrs["shape"]
        return int(ny), int(nx)

    @property
    def name(self) -> str:
        return str(self.attrs.get("name", ""))

    @property
    def chunk(self) -> int:
        return int(self.attrs.get("chunk", 1024))

    @property
    def pixel_scale_arcsec(self) -> float:
        return float(self.attrs["pixel_scale_arcsec"])

    @property
    def zeropoint_ab(self) -> dict[str, float]:
        return {b: float(v) for b, v in self.attrs["zeropoint_ab"].items()}

    @property
    def psf_encircled_energy(self) -> dict[str, dict[str, list[float]]]:
        """Per-band PSF encircled-energy curves for aperture corrections ({} when absent)."""
        from galscale.survey.psf import PSF_ATTR

        return dict(self.attrs.get(PSF_ATTR) or {})

    @property
    def bunit(self) -> dict[str, str]:
        return dict(self.attrs["bunit"])

    @property
    def wcs_header(self) -> dict[str, Any]:
        return dict(self.attrs["wcs"])

    @property
    def wcs(self):  # -> astropy.wcs.WCS
        """Celestial astropy WCS of the pixel grid (0-based pixel coordinates in astropy calls)."""
        from astropy.io import fits
        from astropy.wcs import WCS

        hdr = fits.Header()
        for k, v in self.wcs_header.items():
            hdr[k] = v
        hdr["NAXIS"] = 2
        hdr["NAXIS1"], hdr["NAXIS2"] = self.shape[1], self.shape[0]
        return WCS(hdr, naxis=2)

    def require_bands(self, bands: Iterable[str]) -> list[str]:
        """Return `bands` as a list, raising `MissingBandError` naming any band not present."""
        bands = list(bands)
        missing = [b for b in bands if b not in self.attrs["bands"]]
        if missing:
            raise MissingBandError(
                f"survey {self.url} has no band(s) {missing}; it has {self.bands}"
            )
        return bands

    # --- pixels -------------------------------------------------------------------------
    def _group(self):
        if self._root is None:
            store = StrictChunkStore(_zarr_store(self.url, self.storage_options, read_only=True))
            self._root = zarr.open_group(store=store, mode="r")
        return self._root

    def array(self, band: str, kind: str = SCI) -> zarr.Array:
        """The Zarr array of `band` (`kind` is "sci" or "err")."""
        self.require_bands([band])
        if kind not in (SCI, ERR):
            raise ValueError(f"kind must be 'sci' or 'err', got {kind!r}")
        return self._group()[f"{kind}/{band}"]

    def read(self, band: str, y0: int, y1: int, x0: int, x1: int, kind: str = SCI) -> np.ndarray:
        """Pixels [y0:y1, x0:x1] of one band, strictly: a missing/corrupt chunk raises."""
        ny, nx = self.shape
        if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
            raise ValueError(f"region [{y0}:{y1}, {x0}:{x1}] outside survey shape {self.shape}")
        arr = self.array(band, kind)
        try:
            return np.asarray(arr[y0:y1, x0:x1], dtype=np.float32)
        except (MissingChunkError, StorageReadError):
            raise
        except Exception as exc:  # codec failure: name the chunk(s) involved
            key = f"{kind}/{band}/c/{y0 // self.chunk}/{x0 // self.chunk}"
            raise CorruptChunkError(
                f"cannot decode {kind}/{band} region [{y0}:{y1}, {x0}:{x1}] of {self.url}: "
                f"{type(exc).__name__}: {exc}", key,
            ) from exc

    def read_block(
        self, bands: Iterable[str], y0: int, y1: int, x0: int, x1: int, *, strict: bool = False
    ) -> SurveyBlock:
        """Science and error pixels of several bands over one region, as a `SurveyBlock`.

        With `strict=False` a missing or corrupt chunk does not abort the read: its pixels
        become NaN (so sources over them are flagged) and the problem is listed in
        `block.problems`. With `strict=True` it raises `ChunkError`. A storage failure
        (`StorageReadError`) always raises: unreadable is not the same as damaged.
        """
        bands = self.require_bands(bands)
        h, w = y1 - y0, x1 - x0
        sci = np.empty((len(bands), h, w), np.float32)
        err = np.empty((len(bands), h, w), np.float32)
        problems: list[str] = []
        for i, b in enumerate(bands):
            for kind, out in ((SCI, sci), (ERR, err)):
                try:
                    out[i] = self.read(b, y0, y1, x0, x1, kind)
                except ChunkError:
                    if strict:
                        raise
                    out[i] = self._read_chunkwise(b, kind, y0, y1, x0, x1, problems)
        return SurveyBlock(bands=bands, y0=y0, x0=x0, sci=sci, err=err, problems=problems)

    def _read_chunkwise(
        self, band: str, kind: str, y0: int, y1: int, x0: int, x1: int, problems: list[str]
    ) -> np.ndarray:
        c = self.chunk
        out = np.full((y1 - y0, x1 - x0), np.nan, np.float32)
        for cy in range(y0 // c, (y1 - 1) // c + 1):
            for cx in range(x0 // c, (x1 - 1) // c + 1):
                ya, yb = max(y0, cy * c), min(y1, (cy + 1) * c)
                xa, xb = max(x0, cx * c), min(x1, (cx + 1) * c)
                try:
                    out[ya - y0:yb - y0, xa - x0:xb - x0] = self.read(band, ya, yb, xa, xb, kind)
                except MissingChunkError:
                    problems.append(f"missing chunk {kind}/{band}/c/{cy}/{cx}")
                except CorruptChunkError:
                    problems.append(f"corrupt chunk {kind}/{band}/c/{cy}/{cx}")
        return out


@dataclass
class SurveyBlock:
    """In-memory pixels of one region: `sci`, `err` float32 [n_bands, h, w], origin (y0, x0)."""

    bands: list[str]
    y0: int
    x0: int
    sci: np.ndarray
    err: np.ndarray
    problems: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.sci.shape[1]), int(self.sci.shape[2])

    def band(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(science, error) 2-D views of one band."""
        i = self.bands.index(name)
        return self.sci[i], self.err[i]


def open_survey(url: str, storage_options: Mapping[str, Any] | None = None) -> Survey:
    """Open a survey (local path or s3:// URL) reading only its root metadata."""
    opts = dict(storage_options or {})
    try:
        store = _zarr_store(url, opts, read_only=True)
        root = zarr.open_group(store=StrictChunkStore(store), mode="r")
    except FileNotFoundError as exc:
        raise SurveyFormatError(f"no survey at {url}: {exc}") from exc
    attrs = dict(root.attrs)
    if attrs.get("galscale_survey_format") != FORMAT_VERSION:
        raise SurveyFormatError(
            f"{url} is not a galscale survey (galscale_survey_format="
            f"{attrs.get('galscale_survey_format')!r}, expected {FORMAT_VERSION})"
        )
    for key in ("bands", "shape", "pixel_scale_arcsec", "zeropoint_ab", "bunit", "wcs"):
        if key not in attrs:
            raise SurveyFormatError(f"survey {url} lacks root attribute {key!r}")
    return Survey(url=url, storage_options=opts, attrs=attrs, _root=root)


__all__ = [
    "FORMAT_VERSION", "SurveyError", "SurveyFormatError", "MissingBandError", "ChunkError",
    "MissingChunkError", "CorruptChunkError", "StorageReadError", "S3_RETRIES", "SurveyWriter", "write_survey", "Survey",
    "SurveyBlock", "open_survey", "open_fs", "resolve_storage_options", "wcs_cards",
    "band_order", "is_remote",
]
