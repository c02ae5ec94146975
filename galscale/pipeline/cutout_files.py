"""`galscale classify-cutouts`: run the survey models on FITS cutouts a team already has.

Accepted layouts (as galfind and most survey teams write them), band from the file name or the
`FILTER` keyword:

    DIR/<source_id>/f200w.fits          one file per band per source, in a folder per source
    DIR/<source_id>_f200w.fits          one file per band per source, flat
    DIR/<source_id>.fits                one multi-band file: one image HDU per band, named by
                                        EXTNAME (F200W, or SCI_F200W / ERR_F200W) or FILTER

A per-band file's science image is its `SCI` extension or first image HDU; its error map the
`ERR` extension when present. Without one, a constant error is estimated from the image
(1.4826 x median absolute deviation) and the row is flagged. Nothing is reprojected: bands must
share one pixel grid; cutouts smaller than the models' inputs are padded, larger ones cut about
their centre. Missing bands are zeroed and flagged, exactly as for survey cutouts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from galscale.config import NIRCAM_BANDS, SurveyJobConfig
from galscale.survey.cutouts import make_cutouts
from galscale.survey.flags import Flag, add_flag
from galscale.survey.store import SurveyBlock

_BAND_RE = re.compile(r"(?<![a-z0-9])(f\d{3}[wmn])(?![a-z0-9])", re.IGNORECASE)
_FITS_SUFFIXES = (".fits", ".fits.gz", ".fit")


def _band_in(text: str) -> str | None:
    match = _BAND_RE.search(text)
    band = match.group(1).upper() if match else None
    return band if band in NIRCAM_BANDS else None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _FITS_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def discover_cutouts(folder: str | Path) -> dict[str, list[Path]]:
    """source id -> its FITS files, from any of the three layouts."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of FITS cutouts")
    sources: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("*")):
        if not path.is_file() or not path.name.lower().endswith(_FITS_SUFFIXES):
            continue
        if path.parent != root:  # DIR/<source_id>/<band>.fits
            sources[path.parent.relative_to(root).parts[0]].append(path)
            continue
        stem = _stem(path)
        band = _band_in(stem)
        source = stem[: _BAND_RE.search(stem).start()].rstrip("_-.") if band else stem
        sources[source or stem].append(path)
    if not sources:
        raise FileNotFoundError(f"no FITS cutouts (*.fits, *.fits.gz) under {root}")
    return dict(sources)


def _robust_sigma(image: np.ndarray) -> float:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(finite - np.median(finite))))


def read_source_bands(files: list[Path]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """(science per band, error per band, notes) from one source's FITS files."""
    from astropy.io import fits

    sci: dict[str, np.ndarray] = {}
    err: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for path in files:
        try:
            with fits.open(path, memmap=False) as hdus:
                images = [h for h in hdus if getattr(h, "data", None) is not None and h.data.ndim == 2]
                file_band = _band_in(_stem(path)) or _band_in(str(hdus[0].header.get("FILTER", "")))
                for hdu in images:
                    name = str(hdu.header.get("EXTNAME", "")).upper()
                    band = _band_in(name) or _band_in(str(hdu.header.get("FILTER", ""))) or file_band
                    if band is None:
                        continue
                    data = np.asarray(hdu.data, dtype=np.float32)
                    if "ERR" in name:
                        err.setdefault(band, data)
                    elif name in ("", "PRIMARY", "SCI") or band in name:
                        sci.setdefault(band, data)
        except (OSError, ValueError) as exc:
            notes.append(f"unreadable {path.name}: {exc}")
    return sci, err, notes


def _common_block(sci: dict[str, np.ndarray], err: dict[str, np.ndarray],
                  notes: list[str]) -> SurveyBlock:
    bands = [b for b in NIRCAM_BANDS if b in sci]
    shapes = {sci[b].shape for b in bands}
    h, w = min(s[0] for s in shapes), min(s[1] for s in shapes)
    if len(shapes) > 1:
        notes.append(f"bands differ in shape {sorted(shapes)}: cut to common {h}x{w} centre")

    def centre(a: np.ndarray) -> np.ndarray:
        y0, x0 = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
        return a[y0:y0 + h, x0:x0 + w]

    sci_stack, err_stack = [], []
    for band in bands:
        image = centre(sci[band])
        if band in err and err[band].shape == sci[band].shape:
            error = centre(err[band])
        else:
            error = np.full_like(image, _robust_sigma(image))
            notes.append(f"{band}: no ERR map, error estimated from the image")
        sci_stack.append(image)
        err_stack.append(error)
    return SurveyBlock(bands=bands, y0=0, x0=0, sci=np.stack(sci_stack), err=np.stack(err_stack))


def classify_cutout_folder(folder: str | Path, cfg: SurveyJobConfig | None = None,
                           batch_size: int = 64) -> pa.Table:
    """A catalog (source_id as in the file names, P(disk), redshift-class probabilities,
    flags) for every source found under `folder`. Sources that cannot be read are kept, flagged."""
    from galscale.pipeline.inference import PROBABILITY_COLUMNS, SurveyModels

    cfg = cfg or SurveyJobConfig(survey=str(folder), out="")
    models = SurveyModels(cfg)
    sources = discover_cutouts(folder)
    names = list(sources)
    out: dict[str, list] = defaultdict(list)
    for start in range(0, len(names), batch_size):
        chunk = names[start : start + batch_size]
        columns: dict[str, list] = defaultdict(list)
        for name in chunk:
            sci, err, notes = read_source_bands(sources[name])
            flags = np.zeros(1, np.int64)
            reasons: list[list[str]] = [[]]
            if not sci:
                block = SurveyBlock(bands=[], y0=0, x0=0, sci=np.zeros((0, 64, 64), np.float32),
                                    err=np.zeros((0, 64, 64), np.float32))
                add_flag(flags, reasons, 0, Flag.NO_DATA, "; ".join(notes) or "no NIRCam band found")
            else:
                block = _common_block(sci, err, notes)
            missing = [b for b in NIRCAM_BANDS if b not in block.bands]
            if missing and block.bands:
                add_flag(flags, reasons, 0, Flag.BAND_MISSING, ",".join(missing))
            for note in notes:
                reasons[0].append(f"note: {note}")
            h, w = block.shape
            # the source pixel of an even-sized cutout is at index size // 2 (as in ours)
            cut = make_cutouts(block, np.array([w // 2]), np.array([h // 2]), (h, w), cfg.cutouts)
            columns["source_name"].append(name)
            columns["bands"].append(",".join(block.bands))
            columns["flags"].append(int(flags[0]))
            columns["flag_reason"].append("; ".join(reasons[0]))
            columns["masked_fraction"].append(float(cut.masked_fraction[0]))
            columns["morph_cutout"].append(cut.morph[0])
            columns["multiband_flux"].append(cut.multiband_flux[0])
            columns["multiband_err"].append(cut.multiband_err[0])
        batch = {
            "source_id": np.arange(len(chunk), dtype=np.int64),
            "flags": np.asarray(columns["flags"], np.int64),
            "flag_reason": np.asarray(columns["flag_reason"], dtype=object),
            "masked_fraction": np.asarray(columns["masked_fraction"]),
            "morph_cutout": np.stack(columns["morph_cutout"]),
            "multiband_flux": np.stack(columns["multiband_flux"]),
            "multiband_err": np.stack(columns["multiband_err"]),
        }
        result = models(batch)
        out["source_id"] += columns["source_name"]
        out["bands"] += columns["bands"]
        for column in PROBABILITY_COLUMNS:
            out[column] += result[column].tolist()
        out["masked_fraction"] += columns["masked_fraction"]
        out["flags"] += result["flags"].tolist()
        out["flag_reason"] += list(result["flag_reason"])
    return pa.table({
        "source_id": pa.array(out["source_id"], pa.string()),
        "bands": pa.array(out["bands"], pa.string()),
        **{c: pa.array(out[c], pa.float32()) for c in PROBABILITY_COLUMNS},
        "masked_fraction": pa.array(out["masked_fraction"], pa.float64()),
        "flags": pa.array(out["flags"], pa.int64()),
        "flag_reason": pa.array(out["flag_reason"], pa.string()),
    })
