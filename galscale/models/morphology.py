"""D16-equivariant disk / non-disk classifier (escnn), and the plain-torch model the survey runs.

Seed 001: a group-convolutional network with D16 symmetry (8 rotations x 2 reflections,
`flipRot2dOnR2(N=8)`) gives P(disk-like) per galaxy. The 256x256 cutout is first average-pooled
4x4 to 64x64 in plain torch (exact for 90-degree rotations and flips, and 16x cheaper), then
three R2Conv -> InnerBatchNorm -> ReLU -> PointwiseMaxPool stages on regular fields, then
GroupPooling (max over the 16 group channels: an invariant field), spatial mean and a Linear
layer to 2 logits. Every escnn module used here supports `export()`, so after training the
network becomes `DiskClassifierInference`: plain torch, loadable without escnn, equal to the
eval-mode escnn model (tested to 1e-6) and invariant to 90-degree rotations and flips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galscale.models.device import run_batched
from galscale.models.escnn_compat import escnn_modules

GROUP_ORDER = 16  # |D16|: channels of one regular field


@dataclass(frozen=True)
class MorphologyConfig:
    """Architecture arguments (stored in the artefact config)."""

    in_channels: int = 3
    input_pool: int = 4  # 256 -> 64 by exact average pooling before the equivariant part
    fields: tuple[int, ...] = (3, 6, 8)  # regular D16 fields per stage (x16 channels)
    kernel_sizes: tuple[int, ...] = (5, 3, 3)
    num_classes: int = 2  # logits of (non-disk, disk)

    def __post_init__(self) -> None:
        if len(self.fields) != len(self.kernel_sizes):
            raise ValueError("fields and kernel_sizes need the same length")
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError("kernel sizes must be odd (centred filters keep the symmetry exact)")


class D16DiskClassifier(nn.Module):
    """Trainable escnn model: float [N, 3, H, W] in [0, 1] -> logits [N, num_classes]."""

    def __init__(self, config: MorphologyConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MorphologyConfig()
        gspaces, enn = escnn_modules()
        space = gspaces.flipRot2dOnR2(N=8)
        self.in_type = enn.FieldType(space, cfg.in_channels * [space.trivial_repr])
        layers = []
        current = self.in_type
        for n_fields, k in zip(cfg.fields, cfg.kernel_sizes, strict=True):
            out = enn.FieldType(space, n_fields * [space.regular_repr])
            layers += [
                enn.R2Conv(current, out, kernel_size=k, padding=k // 2),
                enn.InnerBatchNorm(out),
                enn.ReLU(out),
                enn.PointwiseMaxPool(out, 2),
            ]
            current = out
        layers.append(enn.GroupPooling(current))
        self.equivariant = enn.SequentialModule(*layers)
        self.head = nn.Linear(cfg.fields[-1], cfg.num_classes)
        self._geometric_tensor = enn.GeometricTensor
        # escnn's R2Conv holds `filter` / `expanded_bias` buffers only in eval mode; start in
        # train mode so that state dicts saved during training load into a fresh model.
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config)
        h = F.avg_pool2d(x, self.config.input_pool)
        h = self.equivariant(self._geometric_tensor(h, self.in_type)).tensor
        return self.head(h.mean(dim=(2, 3)))

    def export(self) -> DiskClassifierInference:
        """Plain-torch copy of the eval-mode network (the survey's inference model)."""
        was_training = self.training
        self.eval()
        exported = self.equivariant.export()
        self.train(was_training)
        inference = DiskClassifierInference(self.config)
        inference.features.load_state_dict(exported.state_dict(), strict=True)
        inference.head.load_state_dict(self.head.state_dict(), strict=True)
        return inference.eval()


class GroupMaxPool(nn.Module):
    """Max over each block of `group_order` consecutive channels (escnn GroupPooling, exported)."""

    def __init__(self, group_order: int = GROUP_ORDER) -> None:
        super().__init__()
        self.group_order = group_order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, c // self.group_order, self.group_order, h, w).amax(dim=2)


class DiskClassifierInference(nn.Module):
    """Plain torch, same layer layout as escnn's export of `D16DiskClassifier`; no escnn needed."""

    def __init__(self, config: MorphologyConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MorphologyConfig()
        layers: list[nn.Module] = []
        cin = cfg.in_channels
        for n_fields, k in zip(cfg.fields, cfg.kernel_sizes, strict=True):
            cout = n_fields * GROUP_ORDER
            layers += [
                nn.Conv2d(cin, cout, k, padding=k // 2),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            cin = cout
        layers.append(GroupMaxPool())
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cfg.fields[-1], cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config)
        h = self.features(F.avg_pool2d(x, self.config.input_pool))
        return self.head(h.mean(dim=(2, 3)))


def _check_input(x: torch.Tensor, cfg: MorphologyConfig) -> None:
    if x.ndim != 4 or x.shape[1] != cfg.in_channels:
        raise ValueError(f"expected a [N, {cfg.in_channels}, H, W] batch, got {tuple(x.shape)}")
    step = cfg.input_pool * 2 ** len(cfg.fields)
    if x.shape[2] % step or x.shape[3] % step:
        raise ValueError(f"height and width must be multiples of {step}, got {tuple(x.shape[2:])}")


def _config_from(architecture: dict) -> MorphologyConfig:
    arch = dict(architecture)
    for key in ("fields", "kernel_sizes"):
        if key in arch:
            arch[key] = tuple(arch[key])
    return MorphologyConfig(**arch)


def build_d16_classifier(**architecture: object) -> D16DiskClassifier:
    """Registry builder of the trainable escnn model."""
    return D16DiskClassifier(_config_from(architecture))


def build_disk_classifier(**architecture: object) -> DiskClassifierInference:
    """Registry builder of the shipped plain-torch inference model."""
    return DiskClassifierInference(_config_from(architecture))


def architecture_dict(config: MorphologyConfig) -> dict:
    """JSON-ready architecture arguments (inverse of the builders)."""
    d = asdict(config)
    d["fields"], d["kernel_sizes"] = list(config.fields), list(config.kernel_sizes)
    return d


def classifier_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of a batch, and its accuracy as a metric."""
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return loss, {"accuracy": accuracy}  # the training loop records the loss itself


def disk_probability(
    model: nn.Module, images: np.ndarray | torch.Tensor, *, batch_size: int = 64
) -> np.ndarray:
    """P(disk-like) = softmax(logits)[:, 1] for float32 [N, 3, 256, 256] in [0, 1] -> float32 [N]."""
    if isinstance(model, D16DiskClassifier):
        model = model.export()
    return run_batched(model, images, batch_size, lambda logits: torch.softmax(logits, 1)[:, 1],
                       "classifying")


__all__ = [
    "GROUP_ORDER", "MorphologyConfig", "D16DiskClassifier", "GroupMaxPool",
    "DiskClassifierInference", "build_d16_classifier", "build_disk_classifier",
    "architecture_dict", "classifier_loss", "disk_probability",
]
