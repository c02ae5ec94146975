"""Hardware bound: the machine's measured matrix-multiply throughput and each model's FLOPs per
cutout, hence the best possible cutouts per second (no model can beat peak FLOP/s / FLOPs).

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (matrix multiplies and
convolutions, 2 per multiply-add; normalisation, activations and pooling are not counted, so
the bound is optimistic). The peak is the better of fp32 and, where the pipeline uses it
(CUDA autocast), bf16.
"""

from __future__ import annotations

from typing import Any

import torch
from common import ModelSet, SizePreset, figure, save_figure, spectral_encoder, time_calls


def matmul_gflops(n: int, dtype: torch.dtype, device: torch.device,
                  min_seconds: float) -> dict[str, Any]:
    """GFLOP/s of an n x n @ n x n matrix multiply (2 n^3 FLOPs), median of repeated calls."""
    try:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        timing = time_calls(lambda: a @ b, min_seconds, warmup=2)
    except (RuntimeError, TypeError) as exc:  # a dtype the device has no kernel for
        return {"supported": False, "error": str(exc)[:300]}
    return {"supported": True, "n": n, "gflops": 2 * n**3 / timing["median_s"] / 1e9,
            "gflops_best": 2 * n**3 / timing["best_s"] / 1e9, "calls": timing["calls"]}


def model_flops(models: ModelSet) -> dict[str, int]:
    """Forward FLOPs per item of each model (batch of one, eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    from galscale.config import MORPH_CUTOUT
    from galscale.models.denoiser import count_flops
    from galscale.models.redshift import classifier_flops
    from galscale.registry import load_model

    flops = {
        "denoiser": count_flops(load_model(models.denoiser).export(), MORPH_CUTOUT, 3),
        "d16_classifier": count_flops(load_model(models.morphology), MORPH_CUTOUT, 3),
        "multiband_classifier": classifier_flops(load_model(models.redshift)),
    }
    vae, _ = spectral_encoder()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vae.encode(torch.zeros(1, vae.n_inputs))
    flops["spectral_encoder"] = int(counter.get_total_flops())
    flops["per_source_chain"] = (flops["denoiser"] + flops["d16_classifier"]
                                 + flops["multiband_classifier"])
    return flops


def run(preset: SizePreset, models: ModelSet, device: torch.device) -> dict[str, Any]:
    matmul = {"fp32": matmul_gflops(preset.matmul_n, torch.float32, device, preset.min_seconds),
              # CPUs without bf16 matmul units run it ~100x slower than fp32: a 2048^3 call
              # takes half a minute there, and 512 already shows the ratio
              "bf16": matmul_gflops(preset.matmul_n if device.type == "cuda"
                                    else min(preset.matmul_n, 512), torch.bfloat16, device,
                                    preset.min_seconds)}
    # The pipeline computes in fp32 on CPU and under bf16 autocast on CUDA
    # (galscale.models.device.inference_context), so that is the precision whose peak bounds it.
    precision = "bf16" if device.type == "cuda" and matmul["bf16"]["supported"] else "fp32"
    peak = matmul[precision]["gflops"] * 1e9
    flops = model_flops(models)
    return {
        "device": str(device), "threads": torch.get_num_threads(), "matmul": matmul,
        "peak_precision": precision, "peak_flops_per_s": peak, "flops_per_item": flops,
        "best_possible_items_per_s": {name: peak / f for name, f in flops.items()},
        "note": "FLOPs count matmuls and convolutions only (FlopCounterMode); the bound is an "
                "upper limit that real convolutions do not reach",
    }


def plot(result: dict[str, Any], path: Any) -> None:
    fig, (ax1, ax2) = figure(2)
    names = [k for k, v in result["matmul"].items() if v.get("supported")]
    ax1.bar(names, [result["matmul"][k]["gflops"] for k in names], color="tab:blue")
    ax1.set_ylabel("GFLOP/s (matmul)")
    ax1.set_title(f"matmul n={result['matmul']['fp32'].get('n')} on {result['device']}")
    best = result["best_possible_items_per_s"]
    ax2.barh(list(best), list(best.values()), color="tab:green")
    ax2.set_xscale("log")
    ax2.set_xlabel(f"best possible items/s at {result['peak_precision']} peak")
    ax2.set_title("hardware bound per model")
    save_figure(fig, path)
