"""The spectral sub-commands of `galscale` (thin wrappers; `galscale.cli` registers them).

    galscale simulate-spectra --n N --out spectra.parquet
    galscale embed-spectra --spectra spectra.parquet --vae VAE --out DIR [--model-out DIR]
    galscale assign --spectra FILE [--model spectral] --out catalog.parquet
    galscale evaluate spectral --out DIR
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np


def _command_line() -> str:
    return shlex.join(["galscale", *sys.argv[1:]])


def load_spectra(paths: list[str], catalog: str | None = None, z: float | None = None,
                 z_column: str = "z"):
    """Spectra from Parquet tables and/or DJA/msaexp FITS files (ids of FITS: running index)."""
    from galscale.spectra.io import (
        concat_batches,
        read_msaexp_fits,
        read_spectra_parquet,
        redshifts_from_catalog,
    )

    batches = []
    next_id = 0
    for path in paths:
        if path.endswith((".fits", ".fits.gz")):
            b = read_msaexp_fits(path, z=z, spec_id=next_id)
            if catalog:
                b.z = redshifts_from_catalog(b.ids, catalog, z_column=z_column)
        elif path.endswith(".parquet"):
            b = read_spectra_parquet(path, catalog=catalog, z_column=z_column)
        else:
            raise SystemExit(f"{path}: expected a .parquet spectra table or a .fits spectrum")
        batches.append(b)
        next_id = int(b.ids.max()) + 1 if len(b) else next_id
    return concat_batches(batches)


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spectra", nargs="+", required=True,
                   help="Parquet spectra table(s) (columns id, z, wave, flux, err) or "
                   "DJA/msaexp .spec.fits file(s)")
    p.add_argument("--catalog", default=None,
                   help="Parquet catalog with columns id and --z-column giving the redshifts")
    p.add_argument("--z-column", default="z", help="redshift column (z)")
    p.add_argument("--z", type=float, default=None,
                   help="redshift of a single FITS spectrum (else read from its header)")
    p.add_argument("--norm-fallback", action="store_true",
                   help="normalise spectra that do not cover rest 1500 A at their bluest "
                   "continuum instead of flagging them (soft flag normalised_at_bluest_...)")


def add_simulate_spectra(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate-spectra",
        help="write simulated NIRSpec prism spectra (five z > 4 populations + noisy) as Parquet",
    )
    p.add_argument("--n", type=int, required=True, help="number of spectra")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--first-id", type=int, default=0, help="id of the first spectrum (0)")
    p.add_argument("--out", required=True, help="output .parquet (spectra-table schema)")

    def run(args: argparse.Namespace) -> int:
        from galscale.sim.spectra import simulate_spectra
        from galscale.spectra.io import simulated_batch, write_spectra_parquet

        sim = simulate_spectra(args.n, seed=args.seed, first_id=args.first_id)
        path = write_spectra_parquet(simulated_batch(sim), args.out)
        counts = dict(zip(*np.unique(sim.population.astype(str), return_counts=True), strict=True))
        print(json.dumps({"out": str(path), "n": len(sim),
                          "populations": {k: int(v) for k, v in counts.items()}}))
        return 0

    p.set_defaults(func=run)


def _add_recon_flag_argument(p: argparse.ArgumentParser) -> None:
    from galscale.config import SpectralEmbeddingConfig

    p.add_argument("--recon-flag-nsigma", type=float,
                   default=SpectralEmbeddingConfig().recon_flag_nsigma,
                   help="flag spectra whose log10 reconstruction MSE is this many robust sigmas "
                   "above the median (no cluster); 0 disables (%(default)s)")


def add_embed_spectra(sub: argparse._SubParsersAction) -> None:
    from galscale.config import SpectralEmbeddingConfig

    d = SpectralEmbeddingConfig()
    p = sub.add_parser(
        "embed-spectra",
        help="fit the spectral embedding (VAE latents -> UMAP -> Gaussian mixtures) on a table "
        "of spectra; write the catalog, median spectra, pictures and the fitted model",
    )
    _add_input_arguments(p)
    p.add_argument("--vae", default="spectral",
                   help="trained spectral VAE artefact folder or shipped name (spectral)")
    p.add_argument("--out", required=True, help="output folder for catalog, medians and pictures")
    p.add_argument("--model-out", default=None,
                   help="folder for the fitted model (default: OUT/model)")
    p.add_argument("--umap-neighbors", type=int, default=d.umap_neighbors,
                   help=f"UMAP n_neighbors ({d.umap_neighbors})")
    p.add_argument("--umap-min-dist", type=float, default=d.umap_min_dist,
                   help=f"UMAP min_dist ({d.umap_min_dist})")
    p.add_argument("--umap-sample", type=int, default=d.umap_sample,
                   help="fit UMAP on at most this many spectra, transform the rest")
    p.add_argument("--umap-backend", choices=("auto", "cuml", "umap-learn"), default=d.umap_backend,
                   help="auto: cuML when a GPU is present, else umap-learn")
    p.add_argument("--k-min", type=int, default=d.k_min, help=f"fewest mixture components ({d.k_min})")
    p.add_argument("--k-max", type=int, default=d.k_max, help=f"most mixture components ({d.k_max})")
    p.add_argument("--gmm-restarts", type=int, default=d.gmm_restarts,
                   help=f"restarts per mixture fit ({d.gmm_restarts})")
    p.add_argument("--silhouette-sample", type=int, default=d.silhouette_sample,
                   help=f"spectra the silhouette is computed on ({d.silhouette_sample})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed ({d.seed})")
    _add_recon_flag_argument(p)

    def run(args: argparse.Namespace) -> int:
        from galscale.config import SpectralEmbeddingConfig
        from galscale.registry import load_artifact, load_model
        from galscale.spectra.fit import fit_embedding
        from galscale.spectra.outputs import write_embedding_products
        from galscale.spectra.preprocess import PreprocessConfig

        cfg = SpectralEmbeddingConfig(
            umap_neighbors=args.umap_neighbors, umap_min_dist=args.umap_min_dist,
            umap_sample=args.umap_sample, umap_backend=args.umap_backend, k_min=args.k_min,
            k_max=args.k_max, gmm_restarts=args.gmm_restarts,
            silhouette_sample=args.silhouette_sample, seed=args.seed,
            recon_flag_nsigma=args.recon_flag_nsigma,
        )
        spectra = load_spectra(args.spectra, args.catalog, args.z, args.z_column)
        vae_artifact = load_artifact(args.vae)
        vae = load_model(args.vae)
        fitted = fit_embedding(spectra, vae, cfg, PreprocessConfig(norm_fallback=args.norm_fallback))
        fitted.model.info.update({"command": _command_line(), "vae_source": str(args.vae),
                                  "vae_sha256": vae_artifact.sha256,
                                  "spectra": [str(Path(s)) for s in args.spectra]})
        model_dir = args.model_out or str(Path(args.out) / "model")
        fitted.model.save(model_dir, training=vae_artifact.config.get("training", {}),
                          metrics=vae_artifact.config.get("metrics", {}))
        paths = write_embedding_products(args.out, fitted.catalog, fitted.preprocessed.x,
                                         fitted.preprocessed.mask, fitted.preprocessed.grid)
        summary = {"model": model_dir, **paths, "k": fitted.selection.k,
                   "silhouette": fitted.selection.silhouette, "n_spectra": len(spectra),
                   "n_flagged": int((fitted.catalog["cluster"] < 0).sum())}
        (Path(args.out) / "embedding_summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        return 0

    p.set_defaults(func=run)


def add_assign(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "assign",
        help="put new spectra into the clusters of a fitted spectral embedding (no refitting)",
    )
    _add_input_arguments(p)
    p.add_argument("--model", default="spectral",
                   help="fitted embedding folder (embed-spectra --model-out) or shipped name")
    p.add_argument("--out", required=True, help="output spectral catalog (.parquet)")

    def run(args: argparse.Namespace) -> int:
        import dataclasses

        from galscale.spectra.model import SpectralEmbeddingModel
        from galscale.spectra.outputs import write_catalog

        model = SpectralEmbeddingModel.load(args.model)
        if args.norm_fallback:
            model.preprocess = dataclasses.replace(model.preprocess, norm_fallback=True)
        spectra = load_spectra(args.spectra, args.catalog, args.z, args.z_column)
        cols = model.embed(spectra)
        write_catalog(cols, args.out)
        counts = np.bincount(cols["cluster"][cols["cluster"] >= 0], minlength=model.mixture.k)
        print(json.dumps({"out": args.out, "n": len(spectra),
                          "n_flagged": int((cols["cluster"] < 0).sum()),
                          "per_cluster": counts.tolist()}))
        return 0

    p.set_defaults(func=run)


def add_evaluate_spectral(models: argparse._SubParsersAction) -> None:
    """`galscale evaluate spectral` (registered under `galscale evaluate`)."""
    p = models.add_parser(
        "spectral",
        help="spectral embedding on simulated spectra: ARI vs true populations, reconstruction "
        "MSE, k and silhouette, persisted-vs-refit assignment agreement (metrics.json)",
    )
    p.add_argument("--vae", default="spectral", help="spectral VAE artefact folder or shipped name")
    p.add_argument("--out", required=True, help="output folder (metrics.json + pictures)")
    p.add_argument("--n-fit", type=int, default=3000, help="simulated spectra to fit on (3000)")
    p.add_argument("--n-heldout", type=int, default=600, help="held-out spectra (600)")
    p.add_argument("--seed", type=int, default=100, help="simulation seed (100)")
    p.add_argument("--gmm-restarts", type=int, default=5, help="restarts per mixture fit (5)")
    _add_recon_flag_argument(p)

    def run(args: argparse.Namespace) -> int:
        from galscale.config import SpectralEmbeddingConfig
        from galscale.registry import load_model
        from galscale.spectra.evaluate import evaluate_spectral

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report = evaluate_spectral(
            load_model(args.vae), n_fit=args.n_fit, n_heldout=args.n_heldout, seed=args.seed,
            config=SpectralEmbeddingConfig(gmm_restarts=args.gmm_restarts,
                                           recon_flag_nsigma=args.recon_flag_nsigma),
        )
        report["command"] = _command_line()
        (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: v for k, v in report.items()
                          if k not in ("per_population", "config", "best_silhouette_per_k")},
                         indent=2))
        return 0

    p.set_defaults(func=run)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register simulate-spectra, embed-spectra and assign."""
    add_simulate_spectra(sub)
    add_embed_spectra(sub)
    add_assign(sub)


__all__ = ["load_spectra", "add_simulate_spectra", "add_embed_spectra", "add_assign",
           "add_evaluate_spectral", "add_parsers"]
