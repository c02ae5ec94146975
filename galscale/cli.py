"""The `galscale` command: one entry point, one sub-command per task.

Each sub-command is a thin wrapper over a library function; `jobs/*.py` call the same
functions so that `ray job submit` and the command line behave identically.
Add a sub-command by writing `_add_<name>(sub)` and listing it in `_SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a simulated JWST survey (Zarr mosaics in 7 NIRCam bands) and its truth catalog",
        description="Simulate a JWST NIRCam survey field with GalSim: 7-band mosaics with a TAN "
        "WCS, PSFs, sky and Poisson noise, error maps, and a Parquet truth catalog.",
    )
    p.add_argument("--out", required=True, help="output folder (local path)")

    def run(args: argparse.Namespace) -> int:
        raise SystemExit("galscale simulate: not implemented yet")

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
    r.add_argument("--n-semisupervised", type=int, default=1500)
    r.add_argument("--seed", type=int, default=0, help="held-out simulation seed offset")
    r.add_argument("--embedding", choices=("tsne", "umap"), default="tsne")
    r.add_argument("--no-ablation", action="store_true")
    r.add_argument("--no-semisupervised", action="store_true")

    def run(args: argparse.Namespace) -> int:
        import json

        from galscale.evaluate.redshift import evaluate_redshift

        report = evaluate_redshift(
            _redshift_model(args.model), args.out, n_realistic=args.n_realistic,
            n_balanced=args.n_balanced, n_semisupervised=args.n_semisupervised, seed=args.seed,
            ablation=not args.no_ablation, semisupervised=not args.no_semisupervised,
            embedding=args.embedding, model_source=args.model,
        )
        summary = {k: {"accuracy": report[k]["accuracy"], "targets_met": report[k]["targets_met"],
                       "per_class": report[k]["per_class"]} for k in ("realistic", "balanced")}
        print(json.dumps(summary, indent=2))
        return 0

    r.set_defaults(func=run)


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
    p.add_argument("--seed", type=int, default=0)

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
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embedding", choices=("tsne", "umap"), default="tsne")

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
        if importlib.util.find_spec(module_name) is None:
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


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_simulate,
    _add_train,
    _add_evaluate,
    _add_ablate_bands,
    _add_semisupervised,
]


def build_parser() -> argparse.ArgumentParser:
    """The full `galscale` argument parser (used by `main` and by the docs test)."""
    parser = argparse.ArgumentParser(
        prog="galscale",
        description="Survey-scale denoising, morphology, redshift class and spectral embedding "
        "of JWST galaxies, on one laptop or a Ray cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `galscale` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
