"""`build_report`: one finished survey run folder -> index.html + PNG figures + summary.txt.

Sections: overview, gallery (raw / denoised cutouts and P(disk)), disk classifier (P(disk)
distribution, disk fraction vs redshift), redshift classes, comparison with truth (simulated
surveys: confusion matrices and ROC curves of both classifiers), spectral clusters (UMAP map,
median spectra with emission lines, redshift per cluster) and the run summary (tiles, sources
in / out / flagged by reason, throughput per stage, models and hashes). A section without data
says why instead of failing; a section that fails says so with the error, and the rest of the
report is still written.

Scale: every figure is drawn from a few projected catalog columns (NumPy aggregates) or from
samples (scatter plots, median spectra, gallery of at most 3 x `per_group` sources), so the
cost grows with the catalog's column bytes only.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from galscale.config import REDSHIFT_CLASSES
from galscale.report import figures as fig
from galscale.report.html import Figure, Section, Table, render_page, write_page
from galscale.report.run import RunFolder, open_run, read_parquet_columns, resolve_truth_url

INDEX = "index.html"
SUMMARY_TXT = "summary.txt"
REPORT_JSON = "report.json"
KINDS = ("disk", "non_disk", "star", "brown_dwarf")  # the simulator's truth `kind` values
PROB_COLUMNS = ["p_disk"] + [f"p_{c}" for c in REDSHIFT_CLASSES]
MAX_SCATTER = 50_000  # points drawn in the UMAP map
MEDIAN_SAMPLE_PER_CLUSTER = 200  # input spectra re-read per cluster for the median spectra


@dataclass
class ReportResult:
    """What `build_report` wrote and measured."""

    out: Path
    index: Path
    figures: list[Path] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)  # also in report.json
    seconds: dict[str, float] = field(default_factory=dict)  # per section


@dataclass
class _Context:
    run: RunFolder
    out: Path
    cat: pa.Table  # the projected catalog columns
    numbers: dict[str, Any]
    truth_url: str | None
    per_group: int
    seed: int
    gallery: bool
    spectra: str | None = None  # input spectra table (for median spectra); else the config's
    truth_match: dict[str, np.ndarray] | None = None  # matched truth columns per catalog row


def _np(table: pa.Table, name: str, dtype: Any = float) -> np.ndarray:
    col = table.column(name)
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype) if col.null_count == 0 \
            else np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(
                zero_copy_only=False), dtype=dtype)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype)


def _fig(ctx: _Context, path: Path, caption: str, wide: bool = False) -> Figure:
    return Figure(os.path.relpath(path, ctx.out), caption, wide)


# ---------------------------------------------------------------------------------------------
# sections


def _redshifts(ctx: _Context) -> tuple[np.ndarray | None, str]:
    """Per-row redshift and where it comes from (spectra, else truth), or (None, reason)."""
    if "spec_redshift" in ctx.cat.column_names:
        z = _np(ctx.cat, "spec_redshift")
        if np.isfinite(z).any():
            return z, "spectroscopic: spec_redshift of the sources with a spectrum"
    if ctx.truth_match is not None:
        return ctx.truth_match["redshift"], "simulation truth: redshift of the matched source"
    return None, ("no redshifts: the run has no spectra (spec_redshift) and no truth catalog "
                  "(simulated surveys only)")


def section_disk(ctx: _Context) -> Section:
    s = Section("disk", "Disk classifier: P(disk)")
    if "p_disk" not in ctx.cat.column_names:
        s.missing = "this run has no morphology stage (no p_disk column)"
        return s
    p = _np(ctx.cat, "p_disk")
    clean = _np(ctx.cat, "flags", np.int64) == 0
    ok = np.isfinite(p)
    n_disk = int((p[ok] > 0.5).sum())
    ctx.numbers["disk"] = {"scored": int(ok.sum()), "called_disk": n_disk,
                           "disk_fraction": n_disk / max(int(ok.sum()), 1),
                           "median_p_disk": float(np.median(p[ok])) if ok.any() else None}
    s.text.append(f"{ok.sum():,} of {len(p):,} sources have a P(disk) ({(~ok).sum():,} flagged "
                  f"no_morphology); {n_disk:,} ({n_disk / max(ok.sum(), 1):.1%}) have "
                  "P(disk) > 0.5.")
    path = fig.plot_pdisk_distribution(p, clean, ctx.out / "pdisk_distribution.png")
    s.figures.append(_fig(ctx, path, "Distribution of P(disk): all scored rows (filled) and "
                          "unflagged rows (line); dotted line at 0.5."))
    z, source = _redshifts(ctx)
    if z is None:
        s.text.append(f"Disk fraction vs redshift: {source}.")
    else:
        truth_disk = None
        if ctx.truth_match is not None:
            truth_disk = ctx.truth_match["kind"] == KINDS.index("disk")
            galaxy = truth_disk | (ctx.truth_match["kind"] == KINDS.index("non_disk"))
            if source.startswith("simulation truth"):  # true stars have redshift 0
                z = np.where(galaxy, z, np.nan)
                source += " (galaxies only)"
        ok_z = np.isfinite(z) & ok
        ctx.numbers["disk"]["redshift_source"] = source
        ctx.numbers["disk"]["with_redshift"] = int(ok_z.sum())
        s.text.append(f"Disk fraction vs redshift uses {ok_z.sum():,} sources; redshift from "
                      f"{source}.")
        if ok_z.any():
            path = fig.plot_disk_fraction_vs_redshift(z, p, ctx.out / "disk_fraction_vs_z.png",
                                                      source.split(":")[0], truth_disk)
            s.figures.append(_fig(ctx, path, "Fraction of sources with P(disk) > 0.5 per "
                                  "redshift bin (equal-count bins, counts on top), mean P(disk)"
                                  + (" and the true disk fraction" if truth_disk is not None
                                     else "") + "; error bars binomial 1-sigma."))
    return s


def section_zclass(ctx: _Context) -> Section:
    s = Section("zclass", "Redshift classes")
    names = [f"p_{c}" for c in REDSHIFT_CLASSES]
    if not set(names) <= set(ctx.cat.column_names):
        s.missing = "this run has no redshift stage (no p_low_z / p_high_z / p_brown_dwarf)"
        return s
    probs = np.column_stack([_np(ctx.cat, n) for n in names])
    fractions = fig.class_fractions(probs)
    n_scored = int(np.isfinite(probs).all(axis=1).sum())
    truth = None
    if ctx.truth_match is not None:
        zc = ctx.truth_match["z_class"]
        known = zc >= 0
        truth = {c: float((zc[known] == i).mean()) if known.any() else 0.0
                 for i, c in enumerate(REDSHIFT_CLASSES)}
    ctx.numbers["zclass"] = {"scored": n_scored, "fractions": fractions, "truth": truth}
    path = fig.plot_class_fractions(fractions, n_scored, ctx.out / "zclass_fractions.png", truth)
    s.text.append(f"{n_scored:,} sources scored by the multi-band redshift-class CNN.")
    s.tables.append(Table(["class", "most probable (count)", "most probable (fraction)",
                           "mean probability"],
                          [[c, v["argmax_count"], v["argmax_fraction"], v["mean_probability"]]
                           for c, v in fractions.items()]))
    s.figures.append(_fig(ctx, path, "Redshift-class fractions: share of sources whose most "
                          "probable class it is, and the mean class probability"
                          + ("; green: truth of the matched simulated sources" if truth else "")
                          + "."))
    return s


def section_truth(ctx: _Context) -> Section:
    s = Section("truth", "Comparison with the simulation's truth")
    if ctx.truth_match is None:
        s.missing = ("no truth catalog: confusion matrices and ROC curves need a simulated "
                     "survey (truth.parquet next to the survey, or --truth)")
        return s
    from galscale.evaluate.redshift import classification_metrics, plot_confusion, plot_roc

    matched = ctx.truth_match["matched"]
    s.text.append(f"Truth: {ctx.truth_url}. {matched.sum():,} of {len(matched):,} catalog rows "
                  "matched a simulated source within 2 px.")
    ctx.numbers["truth"] = {"url": ctx.truth_url, "matched_rows": int(matched.sum())}
    kind = ctx.truth_match["kind"]
    if "p_disk" in ctx.cat.column_names:
        p = _np(ctx.cat, "p_disk")
        disk = kind == KINDS.index("disk")
        use = matched & (disk | (kind == KINDS.index("non_disk"))) & np.isfinite(p)
        if use.any():
            m = fig.plot_disk_truth(disk[use], p[use], ctx.out / "truth_disk.png")
            ctx.numbers["truth"]["disk"] = m
            s.text.append(f"Disk classifier on {m['n']:,} matched galaxies: accuracy "
                          f"{m['accuracy']:.3f}, ROC AUC {m['roc_auc']:.3f}.")
            s.figures.append(_fig(ctx, ctx.out / "truth_disk.png", "Disk vs non-disk against "
                                  "the true morphology: confusion matrix (counts and row "
                                  "fractions) and ROC curve.", wide=True))
        else:
            s.text.append("No matched galaxy has a P(disk): no disk confusion matrix.")
    names = [f"p_{c}" for c in REDSHIFT_CLASSES]
    if set(names) <= set(ctx.cat.column_names):
        probs = np.column_stack([_np(ctx.cat, n) for n in names])
        zc = ctx.truth_match["z_class"]
        use = matched & (zc >= 0) & np.isfinite(probs).all(axis=1)
        if use.any():
            labels = zc[use]
            m = classification_metrics(labels, probs[use])
            ctx.numbers["truth"]["zclass"] = m
            plot_confusion(np.asarray(m["confusion_matrix"]), ctx.out / "truth_zclass_cm.png",
                           f"redshift class, {m['n']:,} matched sources")
            plot_roc(labels, probs[use], ctx.out / "truth_zclass_roc.png",
                     "redshift class: one-vs-rest ROC")
            s.text.append(f"Redshift-class CNN on {m['n']:,} matched sources: accuracy "
                          f"{m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}.")
            s.tables.append(Table(["class", "support", "precision", "recall", "ROC AUC"],
                                  [[c, v["support"], v["precision"], v["recall"], v["roc_auc"]]
                                   for c, v in m["per_class"].items()],
                                  "redshift-class CNN vs truth"))
            s.figures += [
                _fig(ctx, ctx.out / "truth_zclass_cm.png", "Redshift-class confusion matrix "
                     "(rows: true class; counts and row fractions)."),
                _fig(ctx, ctx.out / "truth_zclass_roc.png", "One-vs-rest ROC curve per "
                     "redshift class (symlog false-positive axis)."),
            ]
    return s


def _median_spectra_sample(ctx: _Context, spec: pa.Table) -> tuple[Any, str]:
    """(median-spectra table, note) from a per-cluster sample of the run's input spectra."""
    from galscale.registry import resolve_artifact_path
    from galscale.spectra.io import batch_from_columns
    from galscale.spectra.outputs import cluster_median_spectra
    from galscale.spectra.preprocess import PreprocessConfig, preprocess_spectra

    source = ctx.spectra or ctx.run.config.get("spectra")
    if not source:
        return None, ("the catalog's provenance does not name the input spectra (the imaging "
                      "pass wrote it): give them with --spectra")
    ids = _np(spec, "id", np.int64)
    cluster = _np(spec, "cluster", np.int64)
    rng = np.random.default_rng(ctx.seed)
    chosen = []
    for k in np.unique(cluster[cluster >= 0]):
        members = ids[cluster == k]
        chosen.append(rng.choice(members, min(MEDIAN_SAMPLE_PER_CLUSTER, len(members)),
                                 replace=False))
    if not chosen:
        return None, "no spectrum was assigned to a cluster"
    wanted = np.sort(np.concatenate(chosen))
    import pyarrow.dataset as ds

    from galscale.survey.store import open_fs

    fs, path = open_fs(source, ctx.run.storage_options)
    if fs.isdir(path) and not any(p.endswith(".parquet") for p in fs.ls(path, detail=False)):
        return None, (f"input spectra {source} are DJA FITS files; median spectra are drawn "
                      "from Parquet spectra tables only")
    table = ds.dataset(path, filesystem=fs, format="parquet").to_table(
        filter=ds.field("id").isin(pa.array(wanted, pa.int64())))
    if table.num_rows == 0:
        return None, f"none of the sampled spectra ids were found in {source}"
    batch = batch_from_columns(table)
    preprocess = PreprocessConfig()
    try:
        info = json.loads((resolve_artifact_path(ctx.run.config.get("spectral", "spectral"))
                           / "embedding.json").read_text())
        preprocess = PreprocessConfig(**info["preprocess"])
    except Exception:  # model folder not here: the default grid is the shipped model's
        pass
    pre = preprocess_spectra(batch.wave, batch.flux, batch.err, batch.z, preprocess)
    lookup = dict(zip(ids.tolist(), cluster.tolist(), strict=True))
    row_cluster = np.array([lookup.get(int(i), -1) for i in batch.ids])
    row_cluster = np.where(pre.flags == 0, row_cluster, -1)
    medians = cluster_median_spectra(pre.x, pre.mask, row_cluster, pre.grid)
    return medians, (f"median spectra of {table.num_rows:,} input spectra (at most "
                     f"{MEDIAN_SAMPLE_PER_CLUSTER} per cluster, seed {ctx.seed}) from {source}, "
                     "preprocessed as the embedding does (rest frame, normalised at 1500 A, "
                     "arcsinh)")


def section_spectra(ctx: _Context) -> Section:
    from galscale.spectra.outputs import (
        plot_cluster_medians,
        plot_redshift_distributions,
        plot_umap_map,
    )

    s = Section("spectra", "Spectral clusters")
    if not ctx.run.has_spectra:
        s.missing = ("this run has no spectra (no spectra.parquet: the job ran without "
                     "--spectra)")
        return s
    spec = read_parquet_columns(ctx.run.spectra_url, ["id", "redshift", "umap_x", "umap_y",
                                                      "cluster", "flags"],
                                ctx.run.storage_options)
    cluster = _np(spec, "cluster", np.int64)
    assigned = cluster >= 0
    counts = {int(k): int(v) for k, v in zip(*np.unique(cluster[assigned], return_counts=True),
                                              strict=True)}
    ctx.numbers["spectra"] = {"spectra": spec.num_rows, "assigned": int(assigned.sum()),
                              "clusters": counts}
    s.text.append(f"{spec.num_rows:,} spectra, {assigned.sum():,} assigned to {len(counts)} "
                  f"clusters, {(~assigned).sum():,} flagged (not assigned).")
    if not assigned.any():
        s.missing = "no spectrum was assigned to a cluster: no cluster pictures"
        return s
    s.tables.append(Table(["cluster", "spectra", "median redshift"],
                          [[k, v, float(np.nanmedian(_np(spec, "redshift")[cluster == k]))]
                           for k, v in counts.items()]))
    xy = np.column_stack([_np(spec, "umap_x"), _np(spec, "umap_y")])[assigned]
    xy, lab = fig.reduce_points(xy, cluster[assigned], MAX_SCATTER, ctx.seed)
    path = plot_umap_map(xy, lab, ctx.out / "spectra_umap.png")
    s.figures.append(_fig(ctx, path, f"UMAP map of the spectral latent space coloured by "
                          f"cluster ({len(xy):,} of {assigned.sum():,} assigned spectra "
                          "drawn)."))
    path = plot_redshift_distributions(_np(spec, "redshift")[assigned], cluster[assigned],
                                       ctx.out / "spectra_redshifts.png")
    s.figures.append(_fig(ctx, path, "Redshift distribution per cluster."))
    try:
        medians, note = _median_spectra_sample(ctx, spec)
    except Exception as exc:  # the other spectral pictures still stand
        medians, note = None, f"median spectra failed: {type(exc).__name__}: {exc}"
    if medians is not None and medians.num_rows:
        path = plot_cluster_medians(medians, ctx.out / "spectra_medians.png")
        s.figures.append(_fig(ctx, path, "Median rest-frame spectrum per cluster, offset "
                              "vertically, main emission lines marked; " + note + ".", True))
    else:
        s.text.append(f"Median spectra: not drawn ({note}).")
    return s


def section_gallery(ctx: _Context) -> Section:
    s = Section("gallery", "Gallery: raw and denoised cutouts")
    if "p_disk" not in ctx.cat.column_names:
        s.missing = "this run has no morphology stage (no p_disk column)"
        return s
    if not ctx.gallery:
        s.missing = "gallery not requested (--no-gallery)"
        return s
    from galscale.report.gallery import build_gallery, cutout_config_of_run, load_denoiser
    from galscale.survey.store import open_survey

    survey_url = ctx.run.provenance.get("survey") or ctx.run.config.get("survey")
    try:
        survey = open_survey(survey_url, ctx.run.storage_options)
    except Exception as exc:
        s.missing = (f"the survey {survey_url} cannot be opened here, so no cutouts "
                     f"({type(exc).__name__}: {exc})")
        return s
    denoiser, note = None, ""
    try:
        denoiser, note = load_denoiser(ctx.run.config.get("denoiser", "denoiser"),
                                       ctx.run.provenance.get("model_hashes", {}).get("denoiser"))
    except Exception as exc:
        note = f"no denoiser could be loaded ({exc}); raw cutouts only"
    columns = {n: ctx.cat.column(n).to_numpy(zero_copy_only=False)
               for n in ("source_id", "x", "y", "flags")}
    columns["p_disk"] = _np(ctx.cat, "p_disk")
    if "morph_resolved" in ctx.cat.column_names:
        columns["morph_resolved"] = ctx.cat.column("morph_resolved").to_numpy(
            zero_copy_only=False).astype(bool)
    columns["flag_reason"] = (ctx.cat.column("flag_reason").to_numpy(zero_copy_only=False)
                              if "flag_reason" in ctx.cat.column_names
                              else np.full(ctx.cat.num_rows, "", dtype=object))
    result = build_gallery(columns, survey, denoiser, ctx.out, ctx.per_group, ctx.seed,
                           cutout_config_of_run(ctx.run.config))
    ctx.numbers["gallery"] = result
    s.text.append(f"Morphology cutouts (RGB = F277W, F200W, F150W; central 128 of 256 pixels) "
                  f"cut again from {survey_url} and denoised with the {note}. Sources drawn "
                  f"from {result['pool']} rows with a P(disk); titles: source_id and P(disk) "
                  "from the catalog.")
    from galscale.report.gallery import GROUPS

    for group, info in result["groups"].items():
        what = GROUPS[group][0].upper() + GROUPS[group][1:]
        if info["png"]:
            s.figures.append(_fig(ctx, Path(info["png"]), f"{what}: raw cutout (top) and "
                                  "denoised cutout (bottom).", True))
        else:
            s.text.append(f"{what}: none.")
    return s


def _flag_counts(ctx: _Context) -> dict[str, int]:
    from galscale.survey.flags import Flag

    if "flags" not in ctx.cat.column_names:
        return {}
    flags = _np(ctx.cat, "flags", np.int64)
    return {f.name.lower(): int(np.count_nonzero(flags & int(f))) for f in Flag}


def _reason_counts(ctx: _Context, top: int = 15) -> list[tuple[str, int]]:
    """Most common `flag: detail` reasons (Arrow split + value_counts: no Python loop)."""
    if "flag_reason" not in ctx.cat.column_names or ctx.cat.num_rows == 0:
        return []
    items = pc.list_flatten(pc.split_pattern(pc.fill_null(ctx.cat.column("flag_reason"), ""),
                                             "; "))
    counts = pc.value_counts(items)
    pairs = [(v["values"].as_py(), v["counts"].as_py()) for v in counts if v["values"].as_py()]
    return sorted(pairs, key=lambda kv: -kv[1])[:top]


def section_run(ctx: _Context) -> Section:
    s = Section("run", "Run summary")
    summ = ctx.run.summary
    prov = ctx.run.provenance
    rows = ctx.cat.num_rows
    flags = _flag_counts(ctx)
    n_flagged = int(np.count_nonzero(_np(ctx.cat, "flags", np.int64))) if flags else 0
    s.tables.append(Table(["catalog", "value"], [
        ["run folder", ctx.run.url], ["survey", prov.get("survey", "?")],
        ["galscale version", prov.get("galscale_version", "?")],
        ["tiles in the catalog", len(prov.get("tiles", []))],
        ["rows", rows], ["unflagged rows", rows - n_flagged], ["flagged rows", n_flagged],
    ], "catalog (all finished tiles)"))
    if summ is None:
        s.missing = "no summary.json in the run folder: tile and throughput figures unknown"
    else:
        failed = summ.get("tiles_failed") or {}
        s.tables.append(Table(["last invocation of the job", "value"], [
            ["tiles total", summ.get("tiles_total", 0)], ["tiles done", summ.get("tiles_done", 0)],
            ["tiles skipped (finished earlier)", summ.get("tiles_skipped", 0)],
            ["tiles empty", summ.get("tiles_empty", 0)], ["tiles failed", len(failed)],
            ["sources in", summ.get("sources_in", 0)], ["sources out (unflagged)",
                                                        summ.get("sources_out", 0)],
            ["rows flagged", summ.get("rows_flagged", 0)],
            ["wall time [s]", float(summ.get("seconds", 0.0))],
        ], "summary.json (counts of the tiles this invocation processed)"))
        if failed:
            s.tables.append(Table(["failed tile", "reason"],
                                  [[t, r] for t, r in sorted(failed.items())], "failed tiles"))
        rates = {k: float(v) for k, v in (summ.get("sources_per_second") or {}).items()}
        if rates:
            stage_s = summ.get("stage_seconds") or {}
            wall = float(summ.get("seconds", 0.0))
            s.tables.append(Table(
                ["stage", "seconds (busy; wall for end_to_end)", "sources / s"],
                [[k, wall if k == "end_to_end" else float(stage_s.get(k, float("nan"))), v]
                 for k, v in rates.items()], "throughput"))
            path = fig.plot_throughput(rates, ctx.out / "throughput.png")
            s.figures.append(_fig(ctx, path, "Sources per second per stage (busy time summed "
                                  "over workers) and end to end (wall time)."))
        spectra = summ.get("spectra") or {}
        if spectra:
            s.tables.append(Table(["spectral stage", "value"],
                                  [[k, json.dumps(v) if isinstance(v, dict) else v]
                                   for k, v in sorted(spectra.items())]))
    if flags:
        path = fig.plot_flag_counts(flags, rows, ctx.out / "flags.png")
        s.figures.append(_fig(ctx, path, "Catalog rows carrying each flag (a row can carry "
                              "several); flagged rows are kept, never dropped."))
        reasons = _reason_counts(ctx)
        if reasons:
            s.tables.append(Table(["flag reason", "rows"], reasons, "most common flag reasons"))
    hashes = prov.get("model_hashes") or (summ or {}).get("model_hashes") or {}
    model_rows = [[role, str(ctx.run.config.get(role, role)), sha] for role, sha in
                  sorted(hashes.items())]
    if ctx.run.has_spectra:
        model_rows.append(["spectral", str(ctx.run.config.get("spectral", "spectral")),
                           "(not recorded in the provenance)"])
    s.tables.append(Table(["model", "artefact", "SHA-256 of the weights"], model_rows or
                          [["(none recorded)", "", ""]], "models"))
    ctx.numbers["run"] = {"rows": rows, "flagged_rows": n_flagged, "flags": flags,
                          "summary": {k: summ.get(k) for k in (
                              "tiles_total", "tiles_done", "tiles_skipped", "tiles_empty",
                              "sources_in", "sources_out", "rows_flagged",
                              "sources_per_second")} if summ else None,
                          "model_hashes": hashes}
    return s


def _codes(table: pa.Table, name: str, values: tuple[str, ...]) -> np.ndarray:
    """Index of each row's string in `values` (-1 if absent or null), computed in Arrow."""
    if name not in table.column_names:
        return np.full(table.num_rows, -1, np.int64)
    index = pc.index_in(table.column(name).cast(pa.string()), value_set=pa.array(values))
    return np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), np.int64)


def _match_truth(ctx: _Context) -> None:
    """Per catalog row: matched?, true kind and z_class (codes into KINDS and
    REDSHIFT_CLASSES, -1 when unmatched) and true redshift (NaN when unmatched)."""
    if not ctx.truth_url:
        return
    from galscale.evaluate.truth import TRUTH_POSITION_COLUMNS, match_to_truth

    truth = read_parquet_columns(ctx.truth_url, [*TRUTH_POSITION_COLUMNS, "kind", "z_class",
                                                 "redshift"], ctx.run.storage_options)
    if truth.num_rows == 0 or not {"x", "y"} <= set(truth.column_names):
        raise ValueError(f"{ctx.truth_url} has no rows or no x, y pixel columns")
    index = match_to_truth(ctx.cat.select(["x", "y"]), truth)
    matched = index >= 0
    take = np.where(matched, index, 0)
    out: dict[str, np.ndarray] = {"matched": matched}
    for name, values in (("kind", KINDS), ("z_class", REDSHIFT_CLASSES)):
        codes = _codes(truth, name, values)
        out[name] = np.where(matched, codes[take], -1)
    z = _np(truth, "redshift") if "redshift" in truth.column_names else np.full(truth.num_rows,
                                                                                   np.nan)
    out["redshift"] = np.where(matched, z[take], np.nan)
    ctx.truth_match = out


def _overview(ctx: _Context, sections: list[Section], seconds: float) -> Section:
    n = ctx.numbers
    lines = [f"Run {ctx.run.url}: {ctx.run.num_rows:,} catalog rows, "
             f"{n.get('run', {}).get('flagged_rows', 0):,} flagged."]
    if "disk" in n:
        lines.append(f"P(disk) > 0.5 for {n['disk']['called_disk']:,} of {n['disk']['scored']:,} "
                     f"scored sources ({n['disk']['disk_fraction']:.1%}).")
    if "zclass" in n:
        fr = n["zclass"]["fractions"]
        lines.append("Most probable redshift class: " + ", ".join(
            f"{c} {v['argmax_fraction']:.1%}" for c, v in fr.items()) + ".")
    if "truth" in n:
        t = n["truth"]
        if "disk" in t:
            lines.append(f"Against truth: disk accuracy {t['disk']['accuracy']:.3f} "
                         f"(AUC {t['disk']['roc_auc']:.3f}, {t['disk']['n']:,} galaxies).")
        if "zclass" in t:
            lines.append(f"Against truth: redshift-class accuracy {t['zclass']['accuracy']:.3f} "
                         f"({t['zclass']['n']:,} sources).")
    else:
        lines.append("No truth catalog (not a simulated survey).")
    if "spectra" in n:
        lines.append(f"{n['spectra']['spectra']:,} spectra, {n['spectra']['assigned']:,} in "
                     f"{len(n['spectra']['clusters'])} clusters.")
    else:
        lines.append("No spectra in this run.")
    missing = [s.title for s in sections if s.missing]
    if missing:
        lines.append("Sections without data: " + "; ".join(missing) + ".")
    lines.append(f"Report built in {seconds:.1f} s.")
    n["summary_lines"] = lines
    return Section("overview", "Overview", text=lines)


SECTIONS: tuple[Callable[[_Context], Section], ...] = (
    section_gallery, section_disk, section_zclass, section_truth, section_spectra, section_run,
)
CATALOG_COLUMNS = ["source_id", "x", "y", "flags", "flag_reason", *PROB_COLUMNS, "spec_redshift",
                   "morph_resolved"]


def build_report(run_url: str, out_dir: str | os.PathLike[str], *,
                 storage_options: Mapping[str, Any] | None = None, truth: str | None = None,
                 per_group: int = 6, seed: int = 0, gallery: bool = True,
                 spectra: str | None = None) -> ReportResult:
    """Write the report of the run folder `run_url` (local or s3://) into `out_dir` (local).

    `truth`: a truth catalog (default: found from the survey for simulated surveys);
    `per_group`: gallery sources per group (random, disk, non-disk); `gallery=False` skips
    re-reading cutouts; `spectra`: the run's input spectra table (Parquet), for the median
    spectra, when the catalog's provenance does not name it. Raises `RunFolderError` if
    `run_url` holds no catalog.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}

    def clock(name: str, t0: float, c0: float) -> None:
        seconds[name] = time.perf_counter() - t0
        cpu_seconds[name] = time.process_time() - c0

    run = open_run(run_url, storage_options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # a rebuilt report never links last build's figures
        stale.unlink()
    cat = run.read_columns(CATALOG_COLUMNS)
    ctx = _Context(run=run, out=out, cat=cat, numbers={}, truth_url=None,
                   per_group=per_group, seed=seed, gallery=gallery, spectra=spectra)
    clock("read_catalog", started, cpu_started)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        ctx.truth_url = resolve_truth_url(run, truth)
        _match_truth(ctx)
    except Exception as exc:
        ctx.numbers["truth_error"] = f"{type(exc).__name__}: {exc}"
        ctx.truth_url, ctx.truth_match = None, None
    clock("truth", t0, c0)
    sections = []
    for make in SECTIONS:
        name = make.__name__.removeprefix("section_")
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            section = make(ctx)
        except Exception as exc:  # one broken section must not lose the others
            section = Section(name, name.replace("_", " ").capitalize())
            section.missing = f"this section failed: {type(exc).__name__}: {exc}"
            ctx.numbers.setdefault("errors", {})[name] = traceback.format_exc(limit=3)
        clock(name, t0, c0)
        sections.append(section)
    if "truth_error" in ctx.numbers:
        next(s for s in sections if s.id == "truth").missing = (
            f"the truth catalog could not be read: {ctx.numbers['truth_error']}")
    overview = _overview(ctx, sections, time.perf_counter() - started)
    sections.insert(0, overview)
    title = f"galscale survey report: {run.provenance.get('run_id', Path(run.url).name)}"
    subtitle = [f"run {run.url}", f"survey {run.provenance.get('survey', '?')}",
                f"{run.num_rows:,} catalog rows; galscale "
                f"{run.provenance.get('galscale_version', '?')}"]
    (out / SUMMARY_TXT).write_text("\n".join(overview.text) + "\n", encoding="utf-8")
    ctx.numbers["seconds"] = seconds
    ctx.numbers["cpu_seconds"] = cpu_seconds
    (out / REPORT_JSON).write_text(json.dumps(ctx.numbers, indent=1, default=_json_default),
                                   encoding="utf-8")
    index = write_page(out / INDEX, render_page(
        title, subtitle, sections, links=[(SUMMARY_TXT, "summary.txt"),
                                          (REPORT_JSON, "report.json")]))
    figures = sorted(out.glob("*.png"))
    clock("total", started, cpu_started)
    return ReportResult(out=out, index=index, figures=figures, numbers=ctx.numbers,
                        seconds=seconds)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


__all__ = ["ReportResult", "build_report", "INDEX", "SUMMARY_TXT", "REPORT_JSON"]
