"""Model bound: the exported models on in-memory batches in one process, nothing else.

For the denoiser, the D16 disk classifier, the multi-band (redshift-class) classifier and the
spectral encoder: items per second against batch size, in fp32 with the default memory layout
(`eager`), with channels_last, with torch.compile at the best batch size (where it compiles),
and under bf16 autocast on CUDA only. Also the escnn eval-mode D16 model against its exported
plain-torch copy, and the per-source chain (denoiser + D16 + multi-band classifier) that the
survey job runs: the best combination, and the pipeline's own settings at all threads and at
one thread (what a Ray actor with num_cpus=1 gets: Ray sets OMP_NUM_THREADS from num_cpus).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from common import ModelSet, SizePreset, figure, log, save_figure, spectral_encoder, time_calls

IMAGE_MODELS = ("denoiser", "d16_classifier", "multiband_classifier")


def load_models(models: ModelSet, device: torch.device) -> dict[str, torch.nn.Module]:
    """The models the survey runs, as plain torch modules in eval mode on `device`."""
    from galscale.registry import load_model

    vae, _ = spectral_encoder()
    return {
        "denoiser": load_model(models.denoiser).export().to(device).eval(),
        "d16_classifier": load_model(models.morphology).to(device).eval(),
        "multiband_classifier": load_model(models.redshift).to(device).eval(),
        "spectral_encoder": SpectralEncoder(vae).to(device).eval(),
    }


class SpectralEncoder(torch.nn.Module):
    """The encoder half of the spectral VAE (latent means), as one module to time and compile."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x)[0]


def example_batch(name: str, n: int, device: torch.device, n_spectral: int) -> torch.Tensor:
    """Random inputs of the model's shape (values do not change the arithmetic)."""
    from galscale.config import MORPH_CUTOUT, MULTIBAND_CUTOUT, NIRCAM_BANDS
    from galscale.models.redshift import input_channels

    g = torch.Generator().manual_seed(0)
    if name in ("denoiser", "d16_classifier"):
        x = torch.rand(n, 3, MORPH_CUTOUT, MORPH_CUTOUT, generator=g)
    elif name == "multiband_classifier":
        x = torch.randn(n, input_channels(len(NIRCAM_BANDS)), MULTIBAND_CUTOUT, MULTIBAND_CUTOUT,
                        generator=g)
    else:
        x = torch.randn(n, n_spectral, generator=g)
    return x.to(device)


def _call(model: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device,
          autocast: bool) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode():
            if autocast:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return model(x)
            return model(x)
    return run


def variants(name: str, device: torch.device) -> list[tuple[str, bool, bool]]:
    """(variant name, channels_last, bf16 autocast) to sweep for a model on `device`."""
    out = [("eager", False, False)]
    if name != "spectral_encoder":
        out.append(("channels_last", True, False))
    if device.type == "cuda":  # bf16 is only used (and only fast) on the GPU
        out.append(("bf16_autocast", name != "spectral_encoder", True))
    return out


def measure(model: torch.nn.Module, x: torch.Tensor, device: torch.device, channels_last: bool,
            autocast: bool, min_seconds: float) -> dict[str, Any]:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)
    timing = time_calls(_call(model, x, device, autocast), min_seconds)
    return {"items_per_s": x.shape[0] / timing["median_s"], **timing}


def compiled(model: torch.nn.Module, x: torch.Tensor, device: torch.device, channels_last: bool,
             autocast: bool, min_seconds: float) -> dict[str, Any]:
    """torch.compile at one batch size; the first call's time (compilation) is reported apart."""
    import copy

    model = copy.deepcopy(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        fn = torch.compile(model)
        started = time.perf_counter()
        _call(fn, x, device, autocast)()
        compile_s = time.perf_counter() - started
        timing = time_calls(_call(fn, x, device, autocast), min_seconds)
    except Exception as exc:  # inductor needs a C++ compiler / Triton; record why it failed
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        torch._dynamo.reset()
    return {"items_per_s": x.shape[0] / timing["median_s"], "compile_s": compile_s, **timing}


def sweep_model(name: str, model: torch.nn.Module, preset: SizePreset, device: torch.device,
                n_spectral: int) -> dict[str, Any]:
    batch_sizes = preset.batch_sizes if name != "spectral_encoder" else tuple(
        min(b * 64, preset.spectra_per_s_items) for b in preset.batch_sizes)
    rows = []
    for variant, channels_last, autocast in variants(name, device):
        for n in batch_sizes:
            x = example_batch(name, n, device, n_spectral)
            rows.append({"variant": variant, "batch_size": n,
                         **measure(model, x, device, channels_last, autocast,
                                   preset.min_seconds)})
    model.to(memory_format=torch.contiguous_format)  # leave the shared module as loaded
    best = max(rows, key=lambda r: r["items_per_s"])
    result: dict[str, Any] = {"sweep": rows}
    if preset.try_compile and name in preset.compile_models:
        x = example_batch(name, best["batch_size"], device, n_spectral)
        layout = best["variant"] in ("channels_last", "bf16_autocast") and name != "spectral_encoder"
        autocast = best["variant"] == "bf16_autocast"
        c = compiled(model, x, device, layout, autocast, preset.min_seconds)
        c |= {"variant": f"compiled+{best['variant']}", "batch_size": best["batch_size"]}
        result["compiled"] = c
        if "items_per_s" in c:
            c["speedup_vs_best_uncompiled"] = c["items_per_s"] / best["items_per_s"]
            if c["items_per_s"] > best["items_per_s"]:
                best = {k: c[k] for k in ("variant", "batch_size", "items_per_s")}
    else:
        result["compiled"] = {"skipped": f"torch.compile not tried for {name} at size "
                                         f"{preset.name!r} (compilation time; see --size full)"}
    result["best"] = {k: best[k] for k in ("variant", "batch_size", "items_per_s")}
    return result


def escnn_vs_exported(models: ModelSet, preset: SizePreset, device: torch.device) -> dict[str, Any]:
    """Eval-mode escnn D16 model against its exported plain-torch copy (same weights)."""
    from galscale.models.morphology import build_d16_classifier
    from galscale.registry import load_artifact

    arch = load_artifact(models.morphology).config.get("architecture", {})
    started = time.perf_counter()
    torch.manual_seed(0)
    d16 = build_d16_classifier(**arch).eval()
    build_s = time.perf_counter() - started
    exported = d16.export()
    d16, exported = d16.to(device), exported.to(device)
    n = preset.batch_sizes[len(preset.batch_sizes) // 2]
    x = example_batch("d16_classifier", n, device, 0)
    with torch.inference_mode():
        max_diff = float((d16(x) - exported(x)).abs().max())
    escnn = measure(d16, x, device, False, False, preset.min_seconds)
    plain = measure(exported, x, device, False, False, preset.min_seconds)
    return {"batch_size": n, "escnn_build_s": build_s,
            "escnn_items_per_s": escnn["items_per_s"], "exported_items_per_s": plain["items_per_s"],
            "speedup_exported_vs_escnn": plain["items_per_s"] / escnn["items_per_s"],
            "max_abs_logit_difference": max_diff}


def chain_measured(nets: dict[str, torch.nn.Module], batch_size: int, device: torch.device,
                   min_seconds: float, threads: int | None = None) -> dict[str, Any]:
    """The per-source chain with the pipeline's settings (`prepare_for_inference`,
    `inference_context`): denoiser -> D16 on the denoised cutouts, and the multi-band classifier."""
    from galscale.models.device import inference_context, prepare_for_inference

    den = prepare_for_inference(nets["denoiser"], device)
    d16 = prepare_for_inference(nets["d16_classifier"], device)
    mb = prepare_for_inference(nets["multiband_classifier"], device)
    images = example_batch("denoiser", batch_size, device, 0)
    cubes = example_batch("multiband_classifier", batch_size, device, 0)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
        cubes = cubes.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with inference_context(device):
            torch.softmax(d16(den(images)).float(), 1)
            torch.softmax(mb(cubes).float(), 1)

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        timing = time_calls(run, min_seconds)
    finally:
        torch.set_num_threads(before)
    return {"batch_size": batch_size, "threads": threads or before,
            "items_per_s": batch_size / timing["median_s"], **timing}


def run(preset: SizePreset, models: ModelSet, device: torch.device,
        pipeline_batch_size: int) -> dict[str, Any]:
    nets = load_models(models, device)
    n_spectral = nets["spectral_encoder"].vae.n_inputs
    per_model = {}
    for name, net in nets.items():
        log(f"model bound: {name}")
        per_model[name] = sweep_model(name, net, preset, device, n_spectral)
    best = {name: r["best"]["items_per_s"] for name, r in per_model.items()}
    chain_best = 1.0 / sum(1.0 / best[name] for name in IMAGE_MODELS)
    log("model bound: escnn vs exported, per-source chain")
    return {
        "device": str(device), "threads": torch.get_num_threads(), "models": per_model,
        "best_items_per_s": best,
        "escnn_vs_exported_d16": escnn_vs_exported(models, preset, device),
        "chain": {
            "definition": "per source: denoiser + D16 classifier (256x256x3) + multi-band "
                          "classifier (64x64x7); items/s = 1 / sum(1 / best items/s)",
            "best_items_per_s": chain_best,
            "pipeline_settings_all_threads": chain_measured(nets, pipeline_batch_size, device,
                                                            preset.min_seconds),
            "pipeline_settings_one_thread": chain_measured(nets, pipeline_batch_size, device,
                                                           preset.min_seconds, threads=1),
        },
    }


def plot(result: dict[str, Any], path: Any) -> None:
    names = list(result["models"])
    fig, axes = figure(len(names) + 1, width=4.0)
    for ax, name in zip(axes, names, strict=False):
        rows = result["models"][name]["sweep"]
        for variant in dict.fromkeys(r["variant"] for r in rows):
            pts = [(r["batch_size"], r["items_per_s"]) for r in rows if r["variant"] == variant]
            ax.plot(*zip(*pts, strict=True), marker="o", label=variant)
        c = result["models"][name].get("compiled", {})
        if "items_per_s" in c:
            ax.plot([c["batch_size"]], [c["items_per_s"]], "k*", ms=12, label="compiled")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("items/s")
        ax.set_title(name)
        ax.legend(fontsize=7)
    ax = axes[-1]
    e = result["escnn_vs_exported_d16"]
    ch = result["chain"]
    labels = ["D16 escnn", "D16 exported", "chain best", "chain (pipeline\nsettings)",
              "chain 1 thread"]
    values = [e["escnn_items_per_s"], e["exported_items_per_s"], ch["best_items_per_s"],
              ch["pipeline_settings_all_threads"]["items_per_s"],
              ch["pipeline_settings_one_thread"]["items_per_s"]]
    ax.barh(labels, values, color=["tab:gray", "tab:blue", "tab:green", "tab:olive", "tab:red"])
    ax.set_xlabel("items/s")
    ax.set_title("escnn vs exported; per-source chain")
    save_figure(fig, path)
