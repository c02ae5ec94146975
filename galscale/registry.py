"""Model artefacts: weights + JSON config + SHA-256, loaded without unpickling anything.

An artefact is a folder:

    model.safetensors   the weights (safetensors: tensors only, no code)
    config.json         name, builder, architecture arguments, training command and data, metrics
    sha256              hex SHA-256 of model.safetensors

`builder` names the function that rebuilds the module from `architecture`, e.g.
"galscale.models.denoiser:build_denoiser". Only builders inside `galscale.models` are accepted,
so a tampered config cannot make galscale import arbitrary code. Shipped artefacts live in
`galscale/weights/<name>/` and are found by name.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HASH_FILE = "sha256"
SHIPPED_DIR = Path(__file__).parent / "weights"
_ALLOWED_BUILDER_PREFIX = "galscale.models."


class ArtifactError(RuntimeError):
    """An artefact is missing, corrupt, tampered with or unsafe."""


@dataclass(frozen=True)
class Artifact:
    """A loaded model artefact."""

    name: str
    path: Path
    config: dict[str, Any]
    sha256: str
    state_dict: dict[str, torch.Tensor]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def save_artifact(
    model: torch.nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    builder: str,
    architecture: Mapping[str, Any],
    training: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> Artifact:
    """Write `model`'s weights, its rebuild recipe and provenance as an artefact folder."""
    _check_builder(builder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in _unwrapped(model).state_dict().items()
    }
    weights = out / WEIGHTS_FILE
    save_file(state, str(weights))
    sha = file_sha256(weights)
    config = {
        "name": name,
        "builder": builder,
        "architecture": dict(architecture),
        "training": dict(training),
        "metrics": dict(metrics or {}),
        "sha256": sha,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / HASH_FILE).write_text(sha + "\n")
    return Artifact(name=name, path=out, config=config, sha256=sha, state_dict=state)


def resolve_artifact_path(path_or_name: str | os.PathLike[str]) -> Path:
    """A folder path, or the name of a shipped artefact in galscale/weights/."""
    path = Path(path_or_name)
    if (path / CONFIG_FILE).is_file():
        return path
    shipped = SHIPPED_DIR / str(path_or_name)
    if (shipped / CONFIG_FILE).is_file():
        return shipped
    raise ArtifactError(
        f"no model artefact at {str(path_or_name)!r} (a folder with {CONFIG_FILE} and "
        f"{WEIGHTS_FILE}, or one of the shipped names: {', '.join(shipped_names()) or 'none'})"
    )


def shipped_names() -> list[str]:
    """Names of the artefacts shipped inside the package."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def load_artifact(path_or_name: str | os.PathLike[str]) -> Artifact:
    """Load an artefact, verifying its SHA-256. Weights are read with safetensors only."""
    path = resolve_artifact_path(path_or_name)
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path / CONFIG_FILE} is not valid JSON: {exc}") from exc
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{path} has no {WEIGHTS_FILE} (only safetensors weights are loaded)")
    sha = file_sha256(weights)
    expected = config.get("sha256")
    if expected and expected != sha:
        raise ArtifactError(f"{weights} has SHA-256 {sha}, but {CONFIG_FILE} records {expected}")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise ArtifactError(f"{weights} is not a valid safetensors file: {exc}") from exc
    return Artifact(
        name=config.get("name", path.name), path=path, config=config, sha256=sha,
        state_dict=state,
    )


def _check_builder(builder: str) -> None:
    module, _, func = builder.partition(":")
    if not module.startswith(_ALLOWED_BUILDER_PREFIX) or not func.isidentifier():
        raise ArtifactError(
            f"builder {builder!r} refused: it must be 'galscale.models.<module>:<function>'"
        )


def build_from_config(config: Mapping[str, Any]) -> torch.nn.Module:
    """Rebuild the (untrained) module an artefact config describes."""
    builder = str(config.get("builder", ""))
    _check_builder(builder)
    module_name, _, func_name = builder.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(**config.get("architecture", {}))


def load_model(
    path_or_name: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Rebuild an artefact's module, load its weights strictly, and put it in eval mode."""
    artifact = load_artifact(path_or_name)
    model = build_from_config(artifact.config)
    model.load_state_dict(artifact.state_dict, strict=True)
    return model.to(device).eval()
