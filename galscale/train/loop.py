"""One generic Ray Train loop for every galscale model.

A model plugs in as a small *task* (see `TrainTask`): how to build the module, its datasets, its
loss and optimiser. `train(task, TrainConfig(...))` runs it with Ray Train's TorchTrainer on one
or many workers (CPU/gloo, or GPU/NCCL when the cluster has GPUs), checkpoints every epoch (and
every `checkpoint_every_steps` steps) to a local or S3 `storage_path`, recovers from worker
failures from the latest checkpoint (`max_failures`), and resumes a restarted job that reuses
the same `storage_path` and `run_name`: training continues from the checkpointed step.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

STATE_FILE = "train_state.pt"


@runtime_checkable
class TrainTask(Protocol):
    """What a model must provide to be trained by `train`."""

    name: str

    def build_model(self) -> torch.nn.Module:
        """A freshly initialised module."""
        ...

    def datasets(self, seed: int) -> tuple[Dataset, Dataset]:
        """(train, validation) datasets, rebuilt deterministically inside each worker."""
        ...

    def loss(
        self, model: torch.nn.Module, batch: Any
    ) -> tuple[torch.Tensor, Mapping[str, float]]:
        """Scalar loss for a batch (already on the worker's device) and metrics to log."""
        ...

    def optimizer(self, params: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser."""
        ...


@dataclass(frozen=True)
class TrainConfig:
    """How to run a training task. Defaults fit a 2-core laptop."""

    epochs: int = 5
    batch_size: int = 32
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: str = "auto"  # "auto": use GPUs when the Ray cluster has them; "yes"; "no"
    seed: int = 0
    storage_path: str = "runs/train"  # local folder or s3://bucket/prefix
    run_name: str = ""  # default: the task's name; reuse it to resume a restarted job
    max_failures: int = 2  # worker failures recovered from the latest checkpoint
    checkpoint_every_steps: int = 0  # 0: checkpoint at the end of each epoch only
    max_steps: int = 0  # 0: no limit; otherwise stop after this many optimiser steps
    early_stopping_patience: int = 0  # 0: off; else stop after N epochs without val improvement
    grad_clip_norm: float = 0.0  # 0: off
    num_to_keep: int = 2  # checkpoints kept in storage


@dataclass
class TrainResult:
    """What a finished training run gives back."""

    model: torch.nn.Module  # best-validation weights, on CPU, eval mode
    history: list[dict[str, float]]  # one entry per reported epoch / checkpoint
    checkpoint_path: str
    steps: int
    seconds: float


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _SkipSampler(Sampler[int]):
    """Yields a sampler's indices after skipping the first `skip` (mid-epoch resume)."""

    def __init__(self, base: Sampler[int], skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.base):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _mean_across_workers(values: dict[str, float]) -> dict[str, float]:
    """Average metrics over all workers (each worker saw a shard)."""
    if not values or not torch.distributed.is_initialized():
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    tensor /= torch.distributed.get_world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


def _evaluate(task: TrainTask, model: torch.nn.Module, loader: DataLoader, device) -> dict:
    model.eval()
    sums: dict[str, float] = {}
    batches = 0
    with torch.no_grad():
        for batch in loader:
            loss, metrics = task.loss(model, _to_device(batch, device))
            sums["val_loss"] = sums.get("val_loss", 0.0) + float(loss)
            for key, value in metrics.items():
                if key != "loss":
                    sums[f"val_{key}"] = sums.get(f"val_{key}", 0.0) + float(value)
            batches += 1
    model.train()
    return {k: v / max(batches, 1) for k, v in sums.items()}


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    task: TrainTask = config["task"]
    cfg: TrainConfig = config["cfg"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, cfg.cpus_per_worker))
    seed_everything(cfg.seed)

    model = task.build_model()
    optimizer = task.optimizer(model.parameters())
    make_scheduler = getattr(task, "scheduler", None)
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_val": float("inf"),
             "epochs_without_improvement": 0}
    best_model_state = None
    history: list[dict[str, float]] = []

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and "scheduler" in saved:
            scheduler.load_state_dict(saved["scheduler"])
        state.update(saved["state"])
        best_model_state = saved.get("best_model")
        history = list(saved.get("history", []))

    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    train_set, val_set = task.datasets(cfg.seed)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    val_loader = DataLoader(
        val_set, batch_size=cfg.batch_size,
        sampler=DistributedSampler(val_set, num_replicas=world, rank=rank, shuffle=False),
    )

    def report(epoch_done: bool, metrics: dict[str, float]) -> None:
        entry = {"epoch": float(state["epoch"]), "step": float(state["step"]), **metrics}
        history.append(entry)
        payload = None
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                saved = {
                    "model": {k: v.detach().cpu() for k, v in
                              getattr(model, "module", model).state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "state": dict(state),
                    "history": history,
                }
                if scheduler is not None:
                    saved["scheduler"] = scheduler.state_dict()
                if best_model_state is not None:
                    saved["best_model"] = best_model_state
                torch.save(saved, Path(folder) / STATE_FILE)
                payload = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(entry, checkpoint=payload)

    stop = False
    model.train()
    while state["epoch"] < cfg.epochs and not stop:
        sampler.set_epoch(state["epoch"])
        skip = state["batch_in_epoch"] * cfg.batch_size
        loader = DataLoader(train_set, batch_size=cfg.batch_size,
                            sampler=_SkipSampler(sampler, skip))
        running: dict[str, float] = {}
        seen = 0
        for batch in loader:
            loss, metrics = task.loss(model, _to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            state["step"] += 1
            state["batch_in_epoch"] += 1
            seen += 1
            running["loss"] = running.get("loss", 0.0) + float(loss)
            for key, value in metrics.items():
                if key != "loss":  # the loop records the loss itself
                    running[key] = running.get(key, 0.0) + float(value)
            if cfg.max_steps and state["step"] >= cfg.max_steps:
                stop = True
                break
            if cfg.checkpoint_every_steps and state["step"] % cfg.checkpoint_every_steps == 0:
                report(False, _mean_across_workers({k: v / seen for k, v in running.items()}))
        train_metrics = {k: v / max(seen, 1) for k, v in running.items()}
        if not stop:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
        val_metrics = _evaluate(task, model, val_loader, device)
        metrics = _mean_across_workers({**train_metrics, **val_metrics})
        val = metrics.get("val_loss", float("inf"))
        if val < state["best_val"]:
            state["best_val"] = val
            state["epochs_without_improvement"] = 0
            best_model_state = {k: v.detach().cpu().clone() for k, v in
                                getattr(model, "module", model).state_dict().items()}
        else:
            state["epochs_without_improvement"] += 1
            if cfg.early_stopping_patience and (
                state["epochs_without_improvement"] >= cfg.early_stopping_patience
            ):
                stop = True
        report(True, metrics)


def _storage(cfg: TrainConfig) -> tuple[str, Any]:
    """Ray Train storage path and filesystem; S3 honours AWS_ENDPOINT_URL for S3-compatible stores."""
    if cfg.storage_path.startswith("s3://"):
        import pyarrow.fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        filesystem = pyarrow.fs.S3FileSystem(
            endpoint_override=endpoint,
            scheme="http" if endpoint and endpoint.startswith("http://") else "https",
            region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        )
        return cfg.storage_path.removeprefix("s3://"), filesystem
    return str(Path(cfg.storage_path).resolve()), None


def _wants_gpu(cfg: TrainConfig) -> bool:
    import ray

    if cfg.use_gpu == "yes":
        return True
    if cfg.use_gpu == "no":
        return False
    return ray.cluster_resources().get("GPU", 0) > 0


def train(task: TrainTask, cfg: TrainConfig) -> TrainResult:
    """Train `task` with Ray Train; returns the best-validation model on CPU.

    Starts a local Ray instance if none is running (or joins RAY_ADDRESS).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        # RAY_ADDRESS (set inside `ray job submit`) joins that cluster; otherwise a fresh local
        # instance, never a stale cluster left in /tmp/ray by another process
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
    start = time.time()
    storage_path, filesystem = _storage(cfg)
    use_gpu = _wants_gpu(cfg)
    resources = {"CPU": cfg.cpus_per_worker} | ({"GPU": 1} if use_gpu else {})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"task": task, "cfg": cfg},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.run_name or task.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"training {task.name!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training {task.name!r} produced no checkpoint")
    with result.checkpoint.as_directory() as folder:
        saved = torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")
    model = task.build_model()
    model.load_state_dict(saved.get("best_model") or saved["model"])
    model.eval()
    return TrainResult(
        model=model,
        history=list(saved.get("history", [])),
        checkpoint_path=str(result.checkpoint.path),
        steps=int(saved["state"]["step"]),
        seconds=time.time() - start,
    )


def training_record(task: TrainTask, cfg: TrainConfig, command: str, data: str) -> dict[str, Any]:
    """The provenance written into an artefact's config.json."""
    return {"task": task.name, "command": command, "data": data, "config": asdict(cfg)}
