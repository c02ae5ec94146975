"""The `galscale` command: one entry point, one sub-command per task.

Each sub-command is a thin wrapper over a library function; `jobs/*.py` call the same
functions so that `ray job submit` and the command line behave identically.
Add a sub-command by writing `_add_<name>(sub)` and listing it in `_SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from galscale.config import NoiseLaw


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from galscale.config import NIRCAM_BANDS, SimConfig

    d = SimConfig()
    p = sub.add_parser(
        "simulate",
        help="write a simulated JWST survey (Zarr mosaics in 7 NIRCam bands) and its truth catalog",
        description="Simulate a JWST NIRCam survey field with GalSim: mosaics in nJy/pixel (AB "
        "zero point 31.4) with a TAN WCS, per-band diffraction PSFs, sky + Poisson + read "
        "noise and 1-sigma error maps, plus a Parquet truth catalog of disk and non-disk "
        "galaxies (low-z and z=6-12 dropouts), stars and brown dwarfs. Writes "
        "OUT/survey.zarr and OUT/truth.parquet; the same options and seed give byte-identical "
        "output. See docs/simulation.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True,
                   help="output folder (local path); gets survey.zarr and truth.parquet")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same bytes)")
    p.add_argument("--size", type=int, default=d.size,
                   help="field side in pixels (square field)")
    p.add_argument("--n-sources", type=int, default=d.n_sources,
                   help="number of sources (galaxies, stars and brown dwarfs)")
    p.add_argument("--bands", default=",".join(NIRCAM_BANDS),
                   help="comma-separated NIRCam bands to simulate (must include F277W)")
    p.add_argument("--pixel-scale", type=float, default=d.pixel_scale_arcsec,
                   help="pixel scale in arcsec/pixel")
    p.add_argument("--ra", type=float, default=d.ra_deg, help="field centre right ascension [deg]")
    p.add_argument("--dec", type=float, default=d.dec_deg, help="field centre declination [deg]")
    p.add_argument("--kind-fractions", default=",".join(str(f) for f in d.kind_fractions),
                   help="fractions of disk, non-disk, star and brown-dwarf sources")
    p.add_argument("--high-z-fraction", type=float, default=d.high_z_fraction,
                   help="fraction of galaxies at z = 6-12 (Lyman-break dropouts)")
    p.add_argument("--depth-offset", type=float, default=0.0,
                   help="magnitudes added to every band's 5-sigma depth (positive = deeper)")
    p.add_argument("--chunk", type=int, default=d.chunk, help="Zarr chunk side in pixels")
    p.add_argument("--name", default=d.name, help="survey name stored in the Zarr attributes")
    p.add_argument("--pictures", action="store_true",
                   help="also write sim_field.png (colour composite of the centre) into OUT")

    def run(args: argparse.Namespace) -> int:
        import time

        from galscale.sim.survey import simulate_survey, write_simulated_survey

        try:
            fractions = tuple(float(v) for v in args.kind_fractions.split(","))
            bands = tuple(b.strip().upper() for b in args.bands.split(",") if b.strip())
            cfg = SimConfig(
                size=args.size, n_sources=args.n_sources, seed=args.seed, bands=bands,
                pixel_scale_arcsec=args.pixel_scale, ra_deg=args.ra, dec_deg=args.dec,
                depth_ab={b: v + args.depth_offset for b, v in d.depth_ab.items()},
                kind_fractions=fractions, high_z_fraction=args.high_z_fraction,
                chunk=args.chunk, name=args.name,
            )
            t0 = time.perf_counter()
            sim = simulate_survey(cfg)
        except ValueError as exc:
            raise SystemExit(f"galscale simulate: {exc}") from exc
        t1 = time.perf_counter()
        paths = write_simulated_survey(sim, args.out)
        t2 = time.perf_counter()
        ny, nx = sim.shape
        print(f"survey: {paths['survey']}  bands {','.join(sim.bands)}  {ny} x {nx} px "
              f"at {cfg.pixel_scale_arcsec}\"/px  (nJy/pixel, AB zp 31.4)")
        print(f"truth:  {paths['truth']}  {sim.truth.num_rows} sources: "
              + ", ".join(f"{k} {v}" for k, v in sim.counts_by_kind().items()))
        zc = sim.truth.column("z_class").to_pylist()
        print("z_class: " + ", ".join(f"{c} {zc.count(c)}" for c in ("low_z", "high_z",
                                                                       "brown_dwarf")))
        if args.pictures:
            import os

            from galscale.sim.pictures import save_field_png

            print("picture: " + save_field_png(sim.science, sim.error,
                                               os.path.join(args.out, "sim_field.png")))
        print(f"time: simulate {t1 - t0:.1f} s, write {t2 - t1:.1f} s")
        return 0

    p.set_defaults(func=run)


def _add_sim_pictures(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim-pictures",
        help="draw the simulator's pictures: a colour field composite and a stamp gallery",
        description="Simulate a small field and training stamps and save sim_field.png (colour "
        "composite: R = F444W+F356W, G = F277W+F200W, B = F150W+F115W+F090W) and "
        "sim_gallery.png (morphology stamps of disks and non-disks; 7-band stamps of low-z, "
        "high-z and brown-dwarf sources). The README pictures are made with --out docs/img.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder for the two PNG files")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--size", type=int, default=1024, help="field side in pixels")
    p.add_argument("--n-sources", type=int, default=260, help="sources in the field")
    p.add_argument("--per-class", type=int, default=8, help="gallery stamps per class")

    def run(args: argparse.Namespace) -> int:
        from galscale.sim.pictures import make_pictures

        paths = make_pictures(args.out, seed=args.seed, field_size=args.size,
                              n_sources=args.n_sources, per_class=args.per_class)
        for what, path in paths.items():
            print(f"{what}: {path}")
        return 0

    p.set_defaults(func=run)



def _redshift_model(source: str):
    """Load a redshift-class artefact (folder path or shipped name) for the commands below."""
    from galscale.registry import load_model

    return load_model(source)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained model on held-out simulated data (metrics JSON + pictures)",
    )
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    r = models.add_parser(
        "redshift",
        help="redshift-class CNN: per-class precision/recall, confusion matrix, ROC, band "
        "ablation and the semi-supervised branch on held-out simulated cutouts",
    )
    r.add_argument("--model", default="redshift", help="artefact folder or shipped name")
    r.add_argument("--out", required=True, help="output folder (metrics.json, *.png, ablation.md)")
    r.add_argument("--n-realistic", type=int, default=3000, help="cutouts, realistic fractions")
    r.add_argument("--n-balanced", type=int, default=1500, help="cutouts, balanced classes")
    r.add_argument("--n-semisupervised", type=int, default=1500,
                   help="cutouts for the semi-supervised branch (1500)")
    r.add_argument("--seed", type=int, default=0, help="held-out simulation seed offset")
    r.add_argument("--embedding", choices=("tsne", "umap"), default="tsne",
                   help="2-D embedding of the semi-supervised branch (tsne, as in the paper)")
    r.add_argument("--no-ablation", action="store_true", help="skip the band ablation")
    r.add_argument("--no-semisupervised", action="store_true",
                   help="skip the semi-supervised branch")

    def run(args: argparse.Namespace) -> int:
        import json

        from galscale.evaluate.redshift import evaluate_redshift

        report = evaluate_redshift(
            _redshift_model(args.model), args.out, n_realistic=args.n_realistic,
            n_balanced=args.n_balanced, n_semisupervised=args.n_semisupervised, seed=args.seed,
            ablation=not args.no_ablation, semisupervised=not args.no_semisupervised,
            embedding=args.embedding, model_source=args.model,
        )
        summary = {f"{k} {sel}": {"accuracy": m["accuracy"], "targets_met": m["targets_met"],
                                  "per_class": m["per_class"]}
                   for k in ("realistic", "balanced")
                   for sel, v in report[k].items() if isinstance(v, dict)
                   for m in [v["set_priors"]]}
        op = report["operating_point"]
        summary["equal-recall operating point"] = {
            "weight_high_z": op["weight_high_z"], "chosen_on": f"sim seed {op['calibration_seed']}",
            **{f"{k} {sel}": {c: m["per_class"][c]["recall"] for c in ("low_z", "high_z")}
               for k in ("realistic", "balanced") for sel, m in op[k].items()
               if isinstance(m, dict)}}
        print(json.dumps(summary, indent=2))
        return 0

    r.set_defaults(func=run)
    _add_evaluate_morphology(models)
    _add_evaluate_spectral(models)
    _add_evaluate_catalog(models)


def _add_evaluate_catalog(models: argparse._SubParsersAction) -> None:
    """`galscale evaluate catalog`: a survey catalog against the simulation's truth."""
    c = models.add_parser(
        "catalog",
        help="a survey job's catalog against a simulated survey's truth: completeness, "
        "duplicates, P(disk) accuracy and ROC AUC (all and resolved galaxies), redshift-class "
        "accuracy and recall",
    )
    c.add_argument("catalog", help="catalog.parquet of a run (local path)")
    c.add_argument("truth", help="truth.parquet written by `galscale simulate`")
    c.add_argument("--out", default=None, help="also write the figures to this JSON file")

    def run(args: argparse.Namespace) -> int:
        import json
        from pathlib import Path

        import pyarrow.parquet as pq

        from galscale.evaluate.truth import compare_with_truth

        result = compare_with_truth(pq.read_table(args.catalog), pq.read_table(args.truth))
        text = json.dumps(result, indent=1, default=str)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
        return 0

    c.set_defaults(func=run)


def _add_evaluate_spectral(models: argparse._SubParsersAction) -> None:
    """`galscale evaluate spectral` (defined in galscale.spectra.commands)."""
    from galscale.spectra.commands import add_evaluate_spectral

    add_evaluate_spectral(models)


def _add_spectra(sub: argparse._SubParsersAction) -> None:
    """simulate-spectra, embed-spectra and assign (defined in galscale.spectra.commands)."""
    from galscale.spectra.commands import add_parsers

    add_parsers(sub)


def _add_evaluate_morphology(models: argparse._SubParsersAction) -> None:
    """`galscale evaluate morphology`: denoising quality and the raw-vs-denoised claim."""
    m = models.add_parser(
        "morphology",
        help="denoiser PSNR/SSIM, JWST real-noise injection-recovery, and disk accuracy / ROC "
        "AUC on raw vs denoised held-out cutouts (morphology_evaluation.json + PNGs)",
    )
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--denoiser", default="denoiser", help="artefact folder or shipped name")
    m.add_argument("--classifier", default="morphology",
                   help="classifier trained on denoised inputs (artefact folder or name)")
    m.add_argument("--raw-classifier", default="morphology/raw_baseline",
                   help="identical classifier trained on raw inputs")
    m.add_argument("--images", default=None,
                   help="labelled picture folder (spirals/non_spirals); its held-out split is used")
    m.add_argument("--n-sim", type=int, default=100, help="held-out simulated stamps")
    m.add_argument("--max-real", type=int, default=0, help="at most this many real pictures")
    m.add_argument("--jwst-dir", default=None,
                   help="real JWST cutouts for injection-recovery (default ../shared/data/"
                   "jwst_real_cutouts; skipped when absent)")
    m.add_argument("--n-injections", type=int, default=24,
                   help="simulated galaxies injected into real JWST noise (24)")
    m.add_argument("--seed", type=int, default=0, help="held-out simulation seed offset (0)")
    add_noise_arguments(m)

    def run(args: argparse.Namespace) -> int:
        import json

        from galscale.evaluate.morphology import evaluate_morphology

        report = evaluate_morphology(
            args.out, denoiser=args.denoiser, classifier=args.classifier,
            raw_classifier=args.raw_classifier, images=args.images, n_sim=args.n_sim,
            max_real=args.max_real, jwst_dir=args.jwst_dir, n_injections=args.n_injections,
            seed=args.seed, noise=noise_law(args),
        )
        print(json.dumps({k: report[k] for k in ("denoising", "injection_recovery_jwst",
                                                 "classification")}, indent=2))
        return 0

    m.set_defaults(func=run)


def _add_ablate_bands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate-bands",
        help="redshift-class CNN: accuracy drop with each NIRCam band removed (JSON + table)",
        description="Re-evaluates the trained model on held-out balanced simulated cutouts with "
        "each band removed in turn (set to NaN, i.e. zeroed and flagged by the preprocessing).",
    )
    p.add_argument("--model", default="redshift", help="artefact folder or shipped name")
    p.add_argument("--out", required=True, help="output folder (ablation.json, ablation.md)")
    p.add_argument("--n", type=int, default=1500, help="held-out cutouts (balanced classes)")
    p.add_argument("--seed", type=int, default=0, help="held-out simulation seed offset (0)")

    def run(args: argparse.Namespace) -> int:
        from galscale.evaluate.redshift import ablate_bands, ablation_table

        result = ablate_bands(_redshift_model(args.model), args.out, n=args.n, seed=args.seed,
                              model_source=args.model)
        print(ablation_table(result))
        return 0

    p.set_defaults(func=run)


def _add_semisupervised(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "semisupervised",
        help="t-SNE/UMAP + HDBSCAN + random forest on magnitudes and flux radii of held-out "
        "simulated cutouts: silhouette and cluster/class confusion (JSON + PNG)",
    )
    p.add_argument("--out", required=True, help="output folder (JSON + PNG)")
    p.add_argument("--n", type=int, default=1500, help="held-out cutouts (1500)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed offset (0)")
    p.add_argument("--embedding", choices=("tsne", "umap"), default="tsne",
                   help="2-D embedding before HDBSCAN (tsne, as in the paper)")

    def run(args: argparse.Namespace) -> int:
        import json

        from galscale.evaluate.redshift import semisupervised_report

        result = semisupervised_report(args.out, n=args.n, seed=args.seed,
                                       embedding=args.embedding)
        print(json.dumps(result, indent=2))
        return 0

    p.set_defaults(func=run)

# `galscale train <model>`: each module listed here provides
#   add_arguments(parser)                      its own options (data sizes, model widths...)
#   run(args, cfg: TrainConfig) -> str         trains through galscale.train.loop, saves the
#                                              artefact and returns its folder
TRAIN_MODULES: dict[str, str] = {
    "denoiser": "galscale.train.denoiser",
    "morphology": "galscale.train.morphology",
    "redshift": "galscale.train.redshift",
    "spectral": "galscale.train.spectral",
}


def add_noise_arguments(p: argparse.ArgumentParser) -> None:
    """--noise-sigma / --noise-log-uniform: the noise law of contaminated pictures (training
    and held-out evaluation of the denoiser and classifiers)."""
    from galscale.config import DEFAULT_NOISE

    p.add_argument("--noise-sigma", type=float, nargs=2, metavar=("MIN", "MAX"),
                   default=(DEFAULT_NOISE.sigma_min, DEFAULT_NOISE.sigma_max),
                   help="range of each picture's background noise sigma, on the [0, 1] picture "
                   f"scale (default {DEFAULT_NOISE.sigma_min} {DEFAULT_NOISE.sigma_max})")
    p.add_argument("--noise-log-uniform", action=argparse.BooleanOptionalAction,
                   default=DEFAULT_NOISE.log_uniform,
                   help="draw sigma uniformly in log sigma, or (--no-noise-log-uniform) in sigma "
                   f"(default {'log-uniform' if DEFAULT_NOISE.log_uniform else 'uniform'})")


def noise_law(args: argparse.Namespace) -> NoiseLaw:
    """The `NoiseLaw` of parsed `add_noise_arguments` options."""
    from galscale.config import NoiseLaw

    return NoiseLaw(*args.noise_sigma, log_uniform=args.noise_log_uniform)


def add_train_config_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every training command; they map onto `TrainConfig`."""
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set (5)")
    p.add_argument("--batch-size", type=int, default=32, help="per-worker batch size (32)")
    p.add_argument("--num-workers", type=int, default=1,
                   help="Ray Train data-parallel workers (1); more workers on more nodes scale out")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs per worker (1)")
    p.add_argument("--use-gpu", choices=["auto", "yes", "no"], default="auto",
                   help="auto: one GPU per worker when the Ray cluster has GPUs (auto)")
    p.add_argument("--seed", type=int, default=0, help="random seed of data and weights (0)")
    p.add_argument("--storage-path", default="runs/train",
                   help="checkpoint folder or s3://bucket/prefix (runs/train)")
    p.add_argument("--run-name", default="",
                   help="checkpoint run name; rerun with the same name to resume (default: model)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="worker failures recovered from the latest checkpoint (2)")
    p.add_argument("--checkpoint-every-steps", type=int, default=0,
                   help="also checkpoint every N optimiser steps (0: end of each epoch only)")
    p.add_argument("--out", default=None,
                   help="artefact folder to write (default: runs/models/<model>)")


def train_config_from_args(args: argparse.Namespace):
    """The `TrainConfig` described by the shared training options."""
    from galscale.train.loop import TrainConfig

    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, num_workers=args.num_workers,
        cpus_per_worker=args.cpus_per_worker, use_gpu=args.use_gpu, seed=args.seed,
        storage_path=args.storage_path, run_name=args.run_name,
        max_failures=args.max_failures, checkpoint_every_steps=args.checkpoint_every_steps,
    )


def train_job_main(model: str, doc: str, argv: list[str] | None = None) -> int:
    """Entry point of jobs/train_<model>.py: `galscale train <model>` for `ray job submit`."""
    import importlib

    task_module = importlib.import_module(TRAIN_MODULES[model])
    parser = argparse.ArgumentParser(prog=f"jobs/train_{model}.py", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_config_arguments(parser)
    task_module.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(f"model artefact written to {task_module.run(args, train_config_from_args(args))}")
    return 0


# The command line being parsed; None builds the full parser (docs, tests). Training modules
# import torch and escnn, so their options are only loaded when their model is being trained.
_ARGV: list[str] | None = None


def _parsing_train_model(model: str) -> bool:
    return _ARGV is None or _ARGV[:2] == ["train", model]


def _add_train(sub: argparse._SubParsersAction) -> None:
    import importlib
    import importlib.util

    p = sub.add_parser(
        "train",
        help="train one of the models with Ray Train (denoiser, morphology, redshift, spectral)",
        description="Train a galscale model with Ray Train on this machine or on the Ray "
        "cluster at RAY_ADDRESS, checkpointing every epoch, and write a model artefact "
        "(safetensors weights + config.json + sha256).",
    )
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    for model, module_name in TRAIN_MODULES.items():
        mp = models.add_parser(model, help=f"train the {model} model")
        add_train_config_arguments(mp)
        if importlib.util.find_spec(module_name) is None or not _parsing_train_model(model):
            continue
        task_module = importlib.import_module(module_name)
        if not hasattr(task_module, "add_arguments"):
            continue
        task_module.add_arguments(mp)

        def run(args: argparse.Namespace, module_name: str = module_name) -> int:
            path = importlib.import_module(module_name).run(args, train_config_from_args(args))
            print(f"model artefact written to {path}")
            return 0

        mp.set_defaults(func=run)


def add_classify_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the survey job, shared by `galscale classify` and jobs/classify_survey.py."""
    from galscale.config import CutoutConfig, DetectionConfig, SurveyJobConfig, TilingConfig

    d, t, c = SurveyJobConfig("", ""), TilingConfig(), CutoutConfig()
    p.add_argument("--survey", required=True,
                   help="survey Zarr store: local path or s3://bucket/field.zarr")
    p.add_argument("--out", required=True,
                   help="run folder for the catalog: local path or s3://bucket/prefix")
    p.add_argument("--run-id", default=d.run_id,
                   help=f"run id; rerun with the same id to resume, skipping finished tiles ({d.run_id})")
    p.add_argument("--tile-size", type=int, default=t.tile_size,
                   help=f"tile side in pixels, margin included ({t.tile_size})")
    p.add_argument("--margin", type=int, default=t.margin,
                   help=f"tile overlap margin in pixels, >= half the 256-px cutout ({t.margin})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"cutouts per model batch ({d.batch_size})")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device,
                   help="where models run: auto picks CUDA when the model actors have a GPU (auto)")
    p.add_argument("--stages", default=",".join(d.stages),
                   help="comma-separated stages: morphology, redshift, spectra "
                   f"({','.join(d.stages)}; spectra is added when --spectra is given)")
    p.add_argument("--sources", default=None,
                   help="catalog of RA/Dec (Parquet, FITS or CSV; optional id column) to use "
                   "instead of detection")
    p.add_argument("--spectra", default=None,
                   help="NIRSpec prism spectra: a Parquet table or a folder of DJA .spec.fits files")
    p.add_argument("--spectra-redshifts", default=None,
                   help="catalog (Parquet/CSV) with id and z columns for FITS spectra without redshift")
    p.add_argument("--models", default=None,
                   help="folder with denoiser/, morphology/, redshift/, spectral/ artefacts "
                   "(default: the weights shipped with galscale)")
    p.add_argument("--num-model-actors", type=int, default=d.num_model_actors,
                   help=f"model-stage actors; one per GPU on a GPU cluster ({d.num_model_actors})")
    p.add_argument("--cpus-per-model-actor", type=float, default=d.cpus_per_model_actor,
                   help=f"CPUs Ray reserves per model actor ({d.cpus_per_model_actor})")
    p.add_argument("--model-threads", type=int, default=d.model_threads,
                   help="torch threads per model actor (0: all cores of its node when there is "
                   "one actor, else --cpus-per-model-actor)")
    p.add_argument("--storage-endpoint", default=None,
                   help="S3-compatible endpoint URL (or set AWS_ENDPOINT_URL); credentials come "
                   "from the standard AWS environment variables or the machine's role")
    p.add_argument("--max-tiles", type=int, default=0,
                   help="process only the first N pending tiles (0: all)")
    p.add_argument("--detect-threshold", type=float, default=DetectionConfig().threshold_sigma,
                   help="detection threshold in sigma of the detection stack "
                   f"({DetectionConfig().threshold_sigma})")
    p.add_argument("--morph-side-per-radius", type=float, default=c.morph_side_per_radius,
                   help="frame each 256-px morphology cutout as a square of this many flux radii "
                   "(at most 256 native pixels; 0: always 256 native pixels) "
                   f"({c.morph_side_per_radius:g})")
    p.add_argument("--morph-min-side-px", type=float, default=c.morph_min_side_px,
                   help="smallest framed side in native pixels, so that a compact source is "
                   f"magnified at most 256 / this ({c.morph_min_side_px:g})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def job_config_from_args(args: argparse.Namespace):
    """The `SurveyJobConfig` described by the survey-job options."""
    import dataclasses
    import os

    from galscale.config import CutoutConfig, DetectionConfig, SurveyJobConfig, TilingConfig

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if args.spectra and "spectra" not in stages:
        stages.append("spectra")
    models = {}
    if args.models:
        models = {role: os.path.join(args.models, role)
                  for role in ("denoiser", "morphology", "redshift", "spectral")}
    return SurveyJobConfig(
        survey=args.survey, out=args.out, run_id=args.run_id,
        tiling=TilingConfig(tile_size=args.tile_size, margin=args.margin),
        detection=dataclasses.replace(DetectionConfig(), threshold_sigma=args.detect_threshold),
        cutouts=CutoutConfig(morph_side_per_radius=args.morph_side_per_radius or None,
                             morph_min_side_px=args.morph_min_side_px),
        stages=tuple(stages), sources=args.sources, spectra=args.spectra,
        spectra_redshifts=args.spectra_redshifts, device=args.device,
        batch_size=args.batch_size, num_model_actors=args.num_model_actors,
        cpus_per_model_actor=args.cpus_per_model_actor, model_threads=args.model_threads,
        storage_endpoint=args.storage_endpoint, max_tiles=args.max_tiles, **models,
    )


def run_classify(args: argparse.Namespace) -> int:
    """Run the survey job from parsed options; print the summary; 1 if anything failed."""
    import json
    import logging

    from galscale.pipeline.job import run_survey_job

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = run_survey_job(job_config_from_args(args), progress=not args.quiet)
    if summary.tiles_failed:
        print("failed tiles (rerun with the same --run-id to retry them):")
        for tile_id, reason in sorted(summary.tiles_failed.items()):
            print(f"  {tile_id}: {reason.splitlines()[0]}")
    print("flagged rows by flag: " + json.dumps(summary.sources_flagged, sort_keys=True))
    print(f"catalog written to {summary.catalog}")
    print(summary.one_line())
    return 0 if summary.ok else 1


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="run the survey job: tiles -> sources -> cutouts -> models -> Parquet catalog",
        description="Classify every source of a survey on Ray (a local Ray instance, or the "
        "cluster at RAY_ADDRESS): detection or a position catalog, denoise + D16 P(disk), "
        "low-z/high-z/brown-dwarf probabilities, optional spectral clusters. Writes one Parquet "
        "file per tile plus the gathered survey catalog; a rerun with the same --run-id resumes. "
        "Exit status 1 if any tile failed.",
    )
    add_classify_arguments(p)
    p.set_defaults(func=run_classify)


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="convert FITS mosaics (one per band; JWST i2d or plain images) into a Zarr survey",
        description="Stream FITS mosaics (JWST i2d SCI/ERR/WHT extensions, or a primary-HDU "
        "image) into the galscale survey format at a local path or s3:// URL. All bands must "
        "share one pixel grid; MJy/sr is converted to nJy per pixel (AB zero point 31.4). "
        "See docs/survey-format.md.",
    )
    p.add_argument("files", nargs="+", help="FITS files, one per band")
    p.add_argument("--out", required=True, help="survey location: folder or s3://bucket/x.zarr")
    p.add_argument("--chunk", type=int, default=1024, help="Zarr chunk side in pixels")
    p.add_argument("--name", default="", help="field name stored in the survey")
    p.add_argument("--zeropoint", type=float, default=None,
                   help="AB zero point for units that are not convertible to nJy")
    p.add_argument("--keep-units", action="store_true",
                   help="store pixels in their FITS unit instead of converting to nJy/pixel")
    p.add_argument("--psf", action="append", default=[], metavar="BAND=FILE",
                   help="PSF image of a band (FITS, e.g. from STPSF; repeat per band): its "
                   "encircled energy gives the photometry's aperture corrections")
    p.add_argument("--endpoint-url", default=None,
                   help="S3-compatible endpoint (default: AWS_ENDPOINT_URL); credentials "
                   "come from the standard AWS environment")

    def run(args: argparse.Namespace) -> int:
        import json

        from galscale.survey.ingest import IngestError, ingest_fits, verify_survey
        from galscale.survey.psf import parse_psf_options

        opts = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
        try:
            ingest_fits(args.files, args.out, chunk=args.chunk, name=args.name,
                        zeropoint=args.zeropoint, convert_units=not args.keep_units,
                        storage_options=opts, psf_files=parse_psf_options(args.psf))
        except (IngestError, ValueError) as exc:
            print(f"galscale ingest: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(verify_survey(args.out, opts), indent=1))
        return 0

    p.set_defaults(func=run)


def _add_survey_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "survey-info",
        help="print a survey's metadata (bands, shape, units, zero points, corner RA/Dec)",
        description="Open a galscale survey (local or s3://) reading metadata only and print it "
        "as JSON; with --tiles also the tiling it would get.",
    )
    p.add_argument("survey", help="survey location: folder or s3://bucket/x.zarr")
    p.add_argument("--tiles", action="store_true", help="also list the tiles (TilingConfig)")
    p.add_argument("--tile-size", type=int, default=None, help="tile size incl. margin")
    p.add_argument("--margin", type=int, default=None, help="tile margin in pixels")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint URL")

    def run(args: argparse.Namespace) -> int:
        import dataclasses
        import json

        from galscale.config import TilingConfig
        from galscale.survey.ingest import verify_survey
        from galscale.survey.tiling import tiles_for

        opts = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
        info = verify_survey(args.survey, opts)
        if args.tiles:
            cfg = TilingConfig()
            cfg = dataclasses.replace(cfg, tile_size=args.tile_size or cfg.tile_size,
                                      margin=args.margin if args.margin is not None
                                      else cfg.margin)
            info["tiles"] = [dataclasses.asdict(t) for t in tiles_for(tuple(info["shape"]), cfg)]
        print(json.dumps(info, indent=1))
        return 0

    p.set_defaults(func=run)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a small survey and classify it end to end on a local Ray (make demo)",
        description="The README's first command: simulate a small NIRCam survey with truth, "
        "run the survey job with the shipped models on a local Ray, attach simulated prism "
        "spectra and rerun (resume + spectral clusters), then print where the catalog went and "
        "how it compares with the truth.",
    )
    p.add_argument("--out", default="demo", help="folder for the survey, spectra and run (demo)")
    p.add_argument("--n-spectra", type=int, default=300, help="simulated spectra to attach (300)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args: argparse.Namespace) -> int:
        from galscale.demo import run_demo

        return run_demo(args.out, n_spectra=args.n_spectra, seed=args.seed, quiet=args.quiet)

    p.set_defaults(func=run)


def _add_classify_cutouts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify-cutouts",
        help="run the models on a folder of FITS cutouts you already have",
        description="Classify FITS cutouts (DIR/<id>/f200w.fits, DIR/<id>_f200w.fits, or one "
        "multi-band DIR/<id>.fits per source; band from the file name or FILTER keyword). "
        "The source id is kept from the folder or file name; nothing is reprojected; missing "
        "bands are zeroed and flagged. Writes one Parquet catalog.",
    )
    p.add_argument("folder", help="folder of FITS cutouts")
    p.add_argument("--out", required=True, help="output catalog (.parquet)")
    p.add_argument("--models", default=None,
                   help="folder with denoiser/, morphology/, redshift/ artefacts (default: shipped)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the models run (auto)")
    p.add_argument("--batch-size", type=int, default=64, help="cutouts per model batch (64)")

    def run(args: argparse.Namespace) -> int:
        import os

        import pyarrow.parquet as pq

        from galscale.config import SurveyJobConfig
        from galscale.pipeline.cutout_files import classify_cutout_folder

        models = ({role: os.path.join(args.models, role)
                   for role in ("denoiser", "morphology", "redshift")} if args.models else {})
        cfg = SurveyJobConfig(survey=args.folder, out=args.out, device=args.device,
                              batch_size=args.batch_size, **models)
        table = classify_cutout_folder(args.folder, cfg, batch_size=args.batch_size)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        pq.write_table(table, args.out)
        flagged = sum(1 for f in table.column("flags").to_pylist() if f)
        print(f"{table.num_rows} sources classified ({flagged} flagged); catalog written to "
              f"{args.out}")
        return 0

    p.set_defaults(func=run)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="build the survey report of a finished run: index.html + PNG figures + summary",
        description="Read a finished run folder (<out>/<run_id>, local or s3://) and write a "
        "static HTML report (opens from disk, relative links only) with PNG figures: gallery of "
        "raw and denoised cutouts with P(disk), P(disk) distribution and disk fraction vs "
        "redshift, redshift-class fractions, confusion matrices and ROC curves against the "
        "truth of simulated surveys, spectral UMAP map / median spectra / redshift per "
        "cluster, and the run summary. Sections without data say so. See docs/report.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", help="run folder <out>/<run_id> (local path or s3://bucket/prefix/run)")
    p.add_argument("--out", required=True, help="local output folder (index.html, *.png, "
                   "summary.txt, report.json)")
    p.add_argument("--truth", default=None,
                   help="truth catalog (Parquet); default: found next to a simulated survey")
    p.add_argument("--per-group", type=int, default=6,
                   help="gallery sources per group (random, disk, non-disk)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random samples")
    p.add_argument("--no-gallery", action="store_true",
                   help="skip the gallery (no survey pixels are read)")
    p.add_argument("--spectra", default=None,
                   help="the run's input spectra table (Parquet), for the median spectra per "
                   "cluster; default: the one named in the catalog's provenance")
    p.add_argument("--storage-endpoint", default=None,
                   help="S3-compatible endpoint URL (or set AWS_ENDPOINT_URL); credentials come "
                   "from the standard AWS environment variables or the machine's role")

    def run(args: argparse.Namespace) -> int:
        import os

        from galscale.report import RunFolderError, build_report

        endpoint = args.storage_endpoint or os.environ.get("AWS_ENDPOINT_URL")
        options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
        try:
            result = build_report(args.run, args.out, storage_options=options, truth=args.truth,
                                  per_group=args.per_group, seed=args.seed,
                                  gallery=not args.no_gallery, spectra=args.spectra)
        except RunFolderError as exc:
            raise SystemExit(f"galscale report: {exc}") from exc
        print("\n".join(result.numbers.get("summary_lines", [])))
        print(f"report: {result.index} ({len(result.figures)} figures, "
              f"{result.seconds['total']:.1f} s)")
        return 0

    p.set_defaults(func=run)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_simulate,
    _add_sim_pictures,
    _add_classify,
    _add_classify_cutouts,
    _add_train,
    _add_evaluate,
    _add_ablate_bands,
    _add_semisupervised,
    _add_spectra,
    _add_ingest,
    _add_survey_info,
    _add_report,
]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `galscale` argument parser; complete when `argv` is None (docs, tests), else only
    what parsing `argv` needs (keeps `galscale --help` fast)."""
    global _ARGV
    _ARGV = None if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="galscale",
        description="Survey-scale denoising, morphology, redshift class and spectral embedding "
        "of JWST galaxies, on one laptop or a Ray cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


# Exceptions that describe the user's input (a path, a survey store, a file's contents) rather
# than a fault in galscale, by module and class name: importing the modules here would slow every
# command's start-up, and an exception of one of them means its module is already loaded.
_INPUT_ERRORS = {
    "galscale.survey.store": ("SurveyError",),
    "galscale.survey.ingest": ("IngestError",),
    "galscale.spectra.io": ("SpectraFormatError",),
    "galscale.images": ("ImageLoadError",),
}


def is_input_error(exc: BaseException) -> bool:
    """True for a missing or unreadable path or a malformed input file, survey or table."""
    if isinstance(exc, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError):
        return True
    for module, names in _INPUT_ERRORS.items():
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, tuple(getattr(loaded, n) for n in names)):
            return True
    return False


def run_reporting_input_errors(prog: str, command: Callable[[], int | None]) -> int:
    """Run `command`; an input error (`is_input_error`) becomes one line on stderr and exit
    status 2 instead of a traceback. GALSCALE_DEBUG=1 shows the traceback."""
    try:
        return int(command() or 0)
    except Exception as exc:
        if not is_input_error(exc) or os.environ.get("GALSCALE_DEBUG"):
            raise
        message = exc.args[0] if len(exc.args) == 1 else str(exc)  # KeyError quotes str()
        if isinstance(exc, FileNotFoundError) and exc.strerror is None and " " not in message:
            message = f"no such file or directory: {message}"  # pyarrow gives the path alone
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `galscale` console script."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return run_reporting_input_errors(f"galscale {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
