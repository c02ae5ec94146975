"""Held-out evaluation of the morphology models: denoising quality and seed 001's claim.

Held-out data (never seen in training or validation): real pictures of `--images DIR` in the
file-name-hash held-out split (`images.holdout_mask`, 20 %) and simulated stamps drawn with seed
`sim_seed + HELDOUT_SEED_OFFSET`; contaminated (1-3 contaminants + noise) with the contamination
stream `HELDOUT_CONTAMINATION_SEED`, which training never uses.

Reported (JSON + PNG):

- denoising: PSNR and SSIM against the clean truth, of the noisy input and of the denoised
  output, per image and averaged, for real and simulated galaxies separately;
- injection-recovery on real JWST noise (`../shared/data/jwst_real_cutouts`, skipped cleanly when
  absent): held-out simulated galaxies are injected into real NIRCam cutouts whose sources are
  masked (see `real_noise_field`), denoised, and compared with the injected truth;
- classification: disk / non-disk accuracy and ROC AUC of the classifier trained on denoised
  inputs (evaluated on denoised held-out inputs) and of the identical classifier trained on raw
  inputs (evaluated on raw held-out inputs), with paired-bootstrap 95 % intervals of the gain;
  and (`same_model`) each of the two trained models fed raw, denoised and clean pictures;
- noise sweep: the same comparison with the noise made 1, 2 and 4 times stronger (seed 001's
  galaxies are faint JWST ones; the question is where denoising starts to pay).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from galscale.config import DEFAULT_NOISE, NoiseLaw
from galscale.models.denoiser import denoise_batch
from galscale.models.morphology import disk_probability
from galscale.train.denoiser import contaminate, load_clean_galaxies, simulated_stamps

HELDOUT_CONTAMINATION_SEED = 900_001
INJECTION_SEED_OFFSET = 20_000  # simulated galaxies injected into real JWST noise
# noise sweep: bands of background sigma, uniform in 0.01-0.06 (the first shipped models'
# training law) times 1, 2 and 4; peak S/N of a galaxy's brightest pixel ~17-100, ~8-50, ~4-25
NOISE_SWEEP = tuple(NoiseLaw(0.01 * f, 0.06 * f) for f in (1.0, 2.0, 4.0))
DEFAULT_JWST_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "jwst_real_cutouts"


def psnr(estimate: np.ndarray, truth: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per image of [N, C, H, W] arrays."""
    mse = np.mean((np.asarray(estimate, np.float64) - truth) ** 2, axis=(1, 2, 3))
    return 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-12))


def ssim(estimate: np.ndarray, truth: np.ndarray, data_range: float = 1.0,
         chunk: int = 8) -> np.ndarray:
    """Structural similarity per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
    K1 = 0.01, K2 = 0.03), averaged over pixels and channels, of [N, C, H, W] arrays.
    Computed `chunk` images at a time to bound memory."""
    estimate, truth = np.asarray(estimate), np.asarray(truth)
    if estimate.shape != truth.shape or estimate.ndim != 4:
        raise ValueError(f"need equal [N, C, H, W] shapes, got {estimate.shape}, {truth.shape}")
    return np.concatenate([
        _ssim_chunk(estimate[i : i + chunk], truth[i : i + chunk], data_range)
        for i in range(0, len(truth), chunk)
    ]) if len(truth) else np.empty(0)


def _ssim_chunk(estimate: np.ndarray, truth: np.ndarray, data_range: float) -> np.ndarray:
    x = torch.as_tensor(estimate, dtype=torch.float64)
    y = torch.as_tensor(truth, dtype=torch.float64)
    c = x.shape[1]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(c, 1, 11, 11).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=c)  # valid region only, as in the reference code

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def quality_report(noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray) -> dict[str, Any]:
    """Mean PSNR / SSIM of noisy input and denoised output against the clean truth."""
    p_in, p_out = psnr(noisy, clean), psnr(denoised, clean)
    s_in, s_out = ssim(noisy, clean), ssim(denoised, clean)
    return {
        "n": int(len(clean)),
        "psnr_noisy_db": float(p_in.mean()), "psnr_denoised_db": float(p_out.mean()),
        "psnr_gain_db": float((p_out - p_in).mean()),
        "ssim_noisy": float(s_in.mean()), "ssim_denoised": float(s_out.mean()),
        "ssim_gain": float((s_out - s_in).mean()),
        "fraction_psnr_improved": float((p_out > p_in).mean()),
    }


def classification_report(labels: np.ndarray, p_disk: np.ndarray) -> dict[str, Any]:
    """Accuracy (threshold 0.5), ROC AUC and counts of a binary disk classifier."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    return {
        "n": int(len(labels)), "n_disk": int(labels.sum()),
        "accuracy": float(((p_disk >= 0.5) == labels).mean()),
        "roc_auc": float(roc_auc_score(labels, p_disk)) if 0 < labels.sum() < len(labels)
        else float("nan"),
    }


def paired_bootstrap_gain(
    labels: np.ndarray, p_raw: np.ndarray, p_den: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """95 % intervals of (denoised - raw) accuracy and AUC, resampling galaxies jointly."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    acc, auc = [], []
    n = len(labels)
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        y = labels[i]
        acc.append(((p_den[i] >= 0.5) == y).mean() - ((p_raw[i] >= 0.5) == y).mean())
        if 0 < y.sum() < n:
            auc.append(roc_auc_score(y, p_den[i]) - roc_auc_score(y, p_raw[i]))
    return {"accuracy_gain_95ci": np.percentile(acc, [2.5, 97.5]).tolist(),
            "roc_auc_gain_95ci": np.percentile(auc, [2.5, 97.5]).tolist()}


def real_noise_field(data: np.ndarray, noise_map: np.ndarray, rng: np.random.Generator,
                     size: int) -> np.ndarray:
    """A `size`x`size` field of real JWST noise (image units) from one real cutout.

    Sources are detected with SEP (1.5 sigma, segmentation dilated by 3 px) and their pixels
    replaced by Gaussian draws with the real per-pixel noise map; all other pixels are the real
    sky pixels, background-subtracted. The field is reflect-padded to `size`.
    """
    import sep
    from scipy.ndimage import binary_dilation

    data = np.nan_to_num(np.asarray(data, dtype=np.float64))
    sigma = np.nan_to_num(np.asarray(noise_map, dtype=np.float64), nan=np.nanmedian(noise_map))
    background = sep.Background(np.ascontiguousarray(data))
    sky = data - background.back()
    _, segmap = sep.extract(sky, 1.5, err=sigma, segmentation_map=True)
    mask = binary_dilation(segmap > 0, iterations=3)
    field = np.where(mask, rng.normal(0.0, 1.0, sky.shape) * sigma, sky)
    h, w = field.shape
    if h >= size and w >= size:
        top, left = (h - size) // 2, (w - size) // 2
        return field[top : top + size, left : left + size]
    pad_y, pad_x = max(0, size - h), max(0, size - w)
    field = np.pad(field, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)),
                   mode="reflect")
    return field[:size, :size]


def injection_recovery(
    denoiser: torch.nn.Module, jwst_dir: str | Path, truth: np.ndarray, *, peak_snr: float = 15.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Inject clean truth cutouts ([N, 3, 256, 256] in [0, 1]) into real JWST noise, denoise.

    Each channel gets the noise field of a different real cutout, scaled so that a pixel of
    value 1 has signal-to-noise `peak_snr` against the field's robust (MAD) noise. Returns the
    `quality_report` of noisy vs denoised against the injected truth, or {"skipped": reason}.
    """
    from astropy.io import fits

    root = Path(jwst_dir)
    folders = sorted(p.parent for p in root.rglob("data.fits*")) if root.is_dir() else []
    folders = [f for f in folders if any(f.glob("noise_map.fits*"))]
    if not folders:
        return {"skipped": f"no real JWST cutouts (data + noise_map FITS) under {root}"}
    rng = np.random.default_rng(seed)
    n, c, size, _ = truth.shape
    noisy = np.empty_like(truth)
    used = []
    for i in range(n):
        for ch in range(c):
            folder = folders[(i * c + ch) % len(folders)]
            data = fits.getdata(next(folder.glob("data.fits*")))
            noise_map = fits.getdata(next(folder.glob("noise_map.fits*")))
            field = real_noise_field(data, noise_map, rng, size)
            scale = peak_snr * 1.4826 * float(np.median(np.abs(field - np.median(field))))
            noisy[i, ch] = truth[i, ch] + field / scale
            used.append(str(folder.relative_to(root)))
    noisy = np.clip(noisy, 0.0, 1.0).astype(np.float32)
    denoised = denoise_batch(denoiser, noisy)
    report = quality_report(noisy, denoised, truth)
    report.update({"peak_snr": peak_snr, "real_cutouts_used": len(set(used)),
                   "jwst_dir": str(root)})
    return report


def _plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (labels, p) in curves.items():
        fpr, tpr, _ = roc_curve(labels, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, p):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("disk vs non-disk, held-out")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_triplets(noisy: np.ndarray, denoised: np.ndarray, clean: np.ndarray, path: Path,
                   title: str, n: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(clean))
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    for row in range(n):
        for col, (name, arr) in enumerate((("noisy input", noisy), ("denoised", denoised),
                                           ("clean truth", clean))):
            ax = axes[row, col]
            ax.imshow(np.clip(arr[row].transpose(1, 2, 0), 0, 1), origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def heldout_pair(denoiser: torch.nn.Module, clean: np.ndarray,
                 noise: NoiseLaw) -> tuple[np.ndarray, np.ndarray]:
    """(contaminated, denoised) held-out pictures of `clean` [N, 3, H, W] in [0, 1]: galaxy i
    gets realisation 0 of the held-out contamination stream, its noise drawn by `noise`."""
    noisy = np.stack([contaminate(clean[i], HELDOUT_CONTAMINATION_SEED, i, 0, noise)
                      for i in range(len(clean))])
    return noisy, denoise_batch(denoiser, noisy)


def noise_sweep(denoiser: torch.nn.Module, classifiers: dict[str, torch.nn.Module],
                clean: np.ndarray, labels: np.ndarray, laws: list[NoiseLaw],
                seed: int = 0) -> list[dict[str, Any]]:
    """Raw vs denoised classification of the same labelled galaxies under each noise law:
    `classifier_raw` on raw pictures against `classifier_denoised` on denoised ones, plus the
    raw-trained model on denoised pictures, with paired-bootstrap intervals of the gain."""
    rows = []
    for law in laws:
        noisy, denoised = heldout_pair(denoiser, clean, law)
        p_raw = disk_probability(classifiers["classifier_raw"], noisy)
        p_den = disk_probability(classifiers["classifier_denoised"], denoised)
        raw, den = classification_report(labels, p_raw), classification_report(labels, p_den)
        rows.append({
            "noise": asdict(law), "psnr_noisy_db": float(psnr(noisy, clean).mean()),
            "psnr_denoised_db": float(psnr(denoised, clean).mean()),
            "raw_input": raw, "denoised_input": den,
            "raw_model_on_denoised": classification_report(
                labels, disk_probability(classifiers["classifier_raw"], denoised)),
            "accuracy_gain": den["accuracy"] - raw["accuracy"],
            "roc_auc_gain": den["roc_auc"] - raw["roc_auc"],
            **paired_bootstrap_gain(labels, p_raw, p_den, seed=seed),
        })
    return rows


def evaluate_morphology(
    out_dir: str | Path,
    *,
    denoiser: str = "denoiser",
    classifier: str = "morphology",
    raw_classifier: str = "morphology/raw_baseline",
    images: str | None = None,
    n_sim: int = 100,
    sim_seed: int = 1,
    max_real: int = 0,
    jwst_dir: str | Path | None = None,
    n_injections: int = 24,
    seed: int = 0,
    noise: NoiseLaw = DEFAULT_NOISE,
    sweep: tuple[NoiseLaw, ...] = NOISE_SWEEP,
) -> dict[str, Any]:
    """Run every held-out check; write `morphology_evaluation.json`, `morphology_roc.png` and
    `morphology_denoising_{real,sim}.png` to `out_dir`.

    `noise` is the noise law of the held-out contaminated set (the training law of the models
    under test); the `noise_sweep` section repeats the raw-vs-denoised comparison, same models
    and galaxies, under each law of `sweep`."""
    from galscale.registry import load_artifact, load_model

    start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    den = load_model(denoiser).export()
    galaxies = load_clean_galaxies(images, n_sim=n_sim, sim_seed=sim_seed, split="heldout",
                                   max_real=max_real)
    clean = galaxies.images.astype(np.float32) / 255.0
    noisy, denoised = heldout_pair(den, clean, noise)
    is_sim = np.array([o.startswith("sim:") for o in galaxies.origins])
    report: dict[str, Any] = {
        "heldout": {"images_dir": images, "n_real": int((~is_sim).sum()),
                    "n_sim": int(is_sim.sum()), "sim_seed": sim_seed,
                    "contamination_seed": HELDOUT_CONTAMINATION_SEED, "noise": asdict(noise),
                    "skipped_files": galaxies.skipped},
        "artefacts": {name: {"path": str(load_artifact(ref).path), "sha256": load_artifact(ref).sha256}
                      for name, ref in (("denoiser", denoiser), ("classifier_denoised", classifier),
                                        ("classifier_raw", raw_classifier))},
        "denoising": {"all": quality_report(noisy, denoised, clean)},
    }
    for name, sel in (("real", ~is_sim), ("sim", is_sim)):
        if sel.any():
            report["denoising"][name] = quality_report(noisy[sel], denoised[sel], clean[sel])
            first = np.flatnonzero(sel)[:4]
            _plot_triplets(noisy[first], denoised[first], clean[first],
                           out / f"morphology_denoising_{name}.png", f"held-out {name} galaxies")

    if jwst_dir is None:
        jwst_dir = DEFAULT_JWST_DIR
    inj_truth, _ = simulated_stamps(n_injections, sim_seed + INJECTION_SEED_OFFSET)
    inj = injection_recovery(den, jwst_dir, inj_truth.astype(np.float32) / 255.0, seed=seed)
    report["injection_recovery_jwst"] = inj

    labelled = galaxies.labels >= 0
    y = galaxies.labels[labelled]
    # every trained classifier on every kind of picture, each model loaded and run once: the
    # claim compares the diagonal (each model on its own input kind); `same_model` is the rest
    inputs = {"raw_input": noisy, "denoised_input": denoised, "clean_input": clean}
    models = {"classifier_denoised": load_model(classifier),
              "classifier_raw": load_model(raw_classifier)}
    p_disk = {name: {kind: disk_probability(model, images[labelled])
                     for kind, images in inputs.items()}
              for name, model in models.items()}
    p_den = p_disk["classifier_denoised"]["denoised_input"]
    p_raw = p_disk["classifier_raw"]["raw_input"]
    report["classification"] = {
        "denoised_input": classification_report(y, p_den),
        "raw_input": classification_report(y, p_raw),
    }
    cls = report["classification"]
    cls["accuracy_gain"] = cls["denoised_input"]["accuracy"] - cls["raw_input"]["accuracy"]
    cls["roc_auc_gain"] = cls["denoised_input"]["roc_auc"] - cls["raw_input"]["roc_auc"]
    cls.update(paired_bootstrap_gain(y, p_raw, p_den, seed=seed))
    cls["denoised_not_worse"] = bool(cls["accuracy_gain"] >= 0 and cls["roc_auc_gain"] >= 0)
    for name, sel in (("real", ~is_sim[labelled]), ("sim", is_sim[labelled])):
        if sel.sum() > 1 and 0 < y[sel].sum() < sel.sum():
            cls[f"{name}_only"] = {"denoised_input": classification_report(y[sel], p_den[sel]),
                                   "raw_input": classification_report(y[sel], p_raw[sel])}
    # the other reading of "the same classifier": one trained model fed raw, denoised and
    # clean (upper bound) held-out pictures
    cls["same_model"] = {name: {kind: classification_report(y, p) for kind, p in by_kind.items()}
                         for name, by_kind in p_disk.items()}
    report["noise_sweep"] = noise_sweep(den, models, clean[labelled], y,
                                        list(sweep), seed)
    _plot_roc({"denoised input": (y, p_den), "raw input": (y, p_raw)}, out / "morphology_roc.png")
    report["seconds"] = round(time.time() - start, 1)
    (out / "morphology_evaluation.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


__all__ = [
    "HELDOUT_CONTAMINATION_SEED", "DEFAULT_JWST_DIR", "psnr", "ssim", "quality_report",
    "classification_report", "paired_bootstrap_gain", "real_noise_field", "injection_recovery",
    "heldout_pair", "noise_sweep", "NOISE_SWEEP", "evaluate_morphology",
]
