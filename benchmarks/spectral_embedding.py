"""Benchmark the spectral embedding stages on simulated prism spectra (CPU or GPU).

    .venv/bin/python benchmarks/spectral_embedding.py --sizes 1000 10000 100000
    .venv/bin/python benchmarks/spectral_embedding.py --sizes 1000          # CI-sized

For each size N: simulate N spectra (not a pipeline stage, reported apart), then time
preprocess, encode (VAE latents + reconstruction MSE), UMAP fit (on min(N, --umap-sample)),
UMAP transform (the rest, and separately all N as `galscale assign` would), and the mixture
selection (k in [5, 15]). For `--compare-size` it also fits UMAP on a sample and transforms the
rest, against a full fit, and reports both times and how well the two clusterings agree.
Results go to benchmarks/results/spectral_embedding_<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def _latents(n: int, vae, seed: int, chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate, preprocess and encode in chunks (bounded memory); returns latents, labels, times."""
    from galscale.sim.spectra import simulate_spectra
    from galscale.spectra.embedding import encode_spectra
    from galscale.spectra.preprocess import preprocess_spectra

    times = {"simulate_s": 0.0, "preprocess_s": 0.0, "encode_s": 0.0}
    latents, labels = [], []
    for i, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        sim, dt = _timed(simulate_spectra, m, seed=seed + i, first_id=start)
        times["simulate_s"] += dt
        pre, dt = _timed(preprocess_spectra, sim.wave_um, sim.flux, sim.err, sim.z)
        times["preprocess_s"] += dt
        (lat, _), dt = _timed(encode_spectra, vae, pre.x, pre.mask)
        times["encode_s"] += dt
        latents.append(lat)
        labels.append(sim.label)
    return np.concatenate(latents), np.concatenate(labels), times


def run_size(n: int, vae, args) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from galscale.spectra.embedding import fit_umap_on_sample, make_umap
    from galscale.spectra.mixtures import select_mixture

    lat, labels, times = _latents(n, vae, args.seed)
    ok = np.isfinite(lat).all(axis=1)
    lat, labels = lat[ok], labels[ok]
    fitter = make_umap(n_neighbors=15, min_dist=0.0, random_state=args.seed, backend=args.backend)
    (fitted, rows), times["umap_fit_s"] = _timed(fit_umap_on_sample, lat, fitter, args.umap_sample,
                                                 args.seed)
    rest = np.setdiff1d(np.arange(lat.shape[0]), rows)
    xy = np.empty((lat.shape[0], 2), np.float32)
    xy[rows] = fitted.embedding
    t = time.perf_counter()
    for s in range(0, rest.size, 50_000):
        xy[rest[s : s + 50_000]] = fitted.transform(lat[rest[s : s + 50_000]])
    times["umap_transform_rest_s"] = time.perf_counter() - t
    _, times["umap_transform_all_s"] = _timed(fitted.transform, lat)
    sel, times["gmm_select_s"] = _timed(select_mixture, xy, (5, 15), args.gmm_restarts, args.seed,
                                        5000)
    cluster, _ = sel.mixture.predict(xy)
    return {"n": n, "n_usable": int(ok.sum()), "umap_fit_points": int(rows.size),
            "umap_backend": fitted.backend, **{k: round(v, 3) for k, v in times.items()},
            "k": sel.k, "silhouette": round(sel.silhouette, 4),
            "ari_vs_populations": round(float(adjusted_rand_score(labels, cluster)), 4)}


def compare_sample_vs_full(n: int, sample: int, vae, args) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from galscale.spectra.embedding import fit_umap_on_sample, make_umap
    from galscale.spectra.evaluate import match_labels
    from galscale.spectra.mixtures import select_mixture

    lat, labels, _ = _latents(n, vae, args.seed + 1000)
    ok = np.isfinite(lat).all(axis=1)
    lat, labels = lat[ok], labels[ok]
    fitter = make_umap(n_neighbors=15, min_dist=0.0, random_state=args.seed, backend=args.backend)
    results = {}
    clusters = {}
    for name, size in (("full", lat.shape[0]), ("sample", sample)):
        t = time.perf_counter()
        fitted, rows = fit_umap_on_sample(lat, fitter, size, args.seed)
        xy = fitted.transform(lat)
        xy[rows] = fitted.embedding
        fit_t = time.perf_counter() - t
        sel = select_mixture(xy, (5, 15), args.gmm_restarts, args.seed, 5000)
        clusters[name], _ = sel.mixture.predict(xy)
        results[name] = {"umap_points_fitted": int(rows.size), "umap_fit_plus_transform_s":
                         round(fit_t, 3), "k": sel.k, "silhouette": round(sel.silhouette, 4),
                         "ari_vs_populations": round(float(adjusted_rand_score(labels,
                                                                               clusters[name])), 4)}
    mapping = match_labels(clusters["full"], clusters["sample"])
    mapped = np.array([mapping.get(int(c), -2) for c in clusters["sample"]])
    results["n"] = int(lat.shape[0])
    results["ari_sample_vs_full"] = round(float(adjusted_rand_score(clusters["full"],
                                                                    clusters["sample"])), 4)
    results["matched_label_agreement"] = round(float(np.mean(mapped == clusters["full"])), 4)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--umap-sample", type=int, default=100_000)
    parser.add_argument("--compare-size", type=int, default=10_000,
                        help="N for sample-fit vs full-fit comparison (0: skip)")
    parser.add_argument("--compare-sample", type=int, default=2000)
    parser.add_argument("--gmm-restarts", type=int, default=3)
    parser.add_argument("--backend", default="auto", choices=("auto", "cuml", "umap-learn"))
    parser.add_argument("--vae", default="spectral",
                        help="VAE artefact (folder or shipped name); untrained if unavailable")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from galscale.models.spectral_vae import build_spectral_vae
    from galscale.registry import ArtifactError, load_model

    try:
        vae, vae_source = load_model(args.vae), args.vae
    except ArtifactError:
        torch.manual_seed(0)
        vae, vae_source = build_spectral_vae(2459).eval(), "untrained (timing only)"
    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch_threads": args.threads, "cuda": torch.cuda.is_available()},
              "vae": vae_source, "umap_sample": args.umap_sample, "sizes": []}
    for n in args.sizes:
        entry = run_size(n, vae, args)
        print(json.dumps(entry), flush=True)
        report["sizes"].append(entry)
    if args.compare_size:
        report["sample_vs_full"] = compare_sample_vs_full(args.compare_size, args.compare_sample,
                                                          vae, args)
        print(json.dumps(report["sample_vs_full"]), flush=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or "_".join(str(n) for n in args.sizes)
    path = out / f"spectral_embedding_{tag}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
