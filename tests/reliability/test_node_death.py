"""Node death on a real multi-node Ray cluster on one machine (`ray.cluster_utils.Cluster`):
a worker node is removed while the survey job runs, and while a Ray Train run trains. The job
completes with every source exactly once; training resumes from its last checkpoint."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import ray.cloudpickle
import torch
from ray.cluster_utils import Cluster
from torch.utils.data import TensorDataset

from galscale import catalog
from galscale.pipeline.job import run_survey_job
from galscale.train.loop import TrainConfig, train

from .conftest import N_TILES, RUN_ID, assert_same_catalog

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    """A head node (1 CPU) on this machine; `two_workers` adds the worker nodes."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _alive_worker_nodes(cluster: Cluster) -> dict[str, object]:
    return {n.node_id: n for n in cluster.worker_nodes}


@pytest.fixture
def two_workers(cluster: Cluster) -> Cluster:
    """The module's cluster with two worker nodes (1 CPU each), whatever an earlier test
    removed."""
    while len(cluster.worker_nodes) < 2:
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def _remove_when(cluster: Cluster, ready, pick, timeout: float = 300) -> dict:
    """Background thread: once `ready()` is true, remove the worker node `pick()` names (the
    first worker node if `pick` names none or fails). Any error is kept under "error"."""
    done: dict = {}

    def run() -> None:
        try:
            deadline = time.time() + timeout
            while not ready() and time.time() < deadline:
                time.sleep(0.05)
            try:
                picked = pick()
            except Exception as exc:  # the state API can fail while nodes come and go
                done["pick_error"], picked = repr(exc), None
            node = _alive_worker_nodes(cluster).get(picked) or next(iter(cluster.worker_nodes))
            done["node"], done["at"] = node.node_id, time.time()
            cluster.remove_node(node, allow_graceful=False)  # SIGKILL its raylet and workers
        except Exception as exc:
            done["error"] = repr(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    done["thread"] = thread
    return done


def _busy_worker_node(cluster: Cluster) -> str | None:
    """A worker node that runs a survey-job actor or task right now. The state API needs the
    dashboard; if it fails, `_remove_when` removes the first worker node, which is busy too
    since every CPU of the cluster is in use while tiles are pending."""
    from ray.util.state import list_actors, list_tasks

    workers = set(_alive_worker_nodes(cluster))
    for actor in list_actors(filters=[("state", "=", "ALIVE")]):
        if "SurveyModels" in actor.class_name and actor.node_id in workers:
            return actor.node_id
    for task in list_tasks(filters=[("state", "=", "RUNNING")]):
        if task.node_id in workers:
            return task.node_id
    return None


def test_node_death_during_survey_job(two_workers, field, reference, tmp_path):
    c = two_workers
    out = tmp_path / "out"
    killed = _remove_when(c, lambda: bool(catalog.finished_tiles(str(out), RUN_ID)),
                          lambda: _busy_worker_node(c))
    summary = run_survey_job(field.config(out), progress=False)
    killed["thread"].join(timeout=60)
    assert "node" in killed, f"no node was removed: {killed}"
    assert len(c.worker_nodes) == 1
    print("removed", killed["node"][:8], "tiles per node:", summary.tiles_per_node)
    assert summary.ok and summary.tiles_done == N_TILES, summary.tiles_failed
    table = pq.read_table(summary.catalog)
    ids = np.asarray(table["source_id"])
    assert len(np.unique(ids)) == len(ids)  # duplicated 0
    worst = assert_same_catalog(table, reference["catalog"], model_atol=1e-6)  # lost 0
    print("largest model-probability difference to the clean run:", worst)


@dataclass
class SlowLineFit:
    """y = 3x - 1; every optimiser step appends "<pid> <node id>" to `log` and takes 0.2 s."""

    log: str
    name: str = "node-death-fit"

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Linear(1, 1)

    def datasets(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(256, 1, generator=g)
        y = 3 * x - 1 + 0.01 * torch.randn(256, 1, generator=g)
        return TensorDataset(x[:192], y[:192]), TensorDataset(x[192:], y[192:])

    def loss(self, model, batch):
        x, y = batch
        if model.training:
            node = ray.get_runtime_context().get_node_id()
            with open(self.log, "a") as fh:
                fh.write(f"{os.getpid()} {node}\n")
            time.sleep(0.2)
        return torch.nn.functional.mse_loss(model(x), y), {}

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=0.5)


def _log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


def test_node_death_during_training_resumes_from_checkpoint(two_workers, tmp_path):
    c = two_workers
    log = tmp_path / "steps.log"
    # 2 workers x 16 per batch: 6 steps per epoch, 3 epochs = 18 steps; checkpoint every 2
    cfg = TrainConfig(epochs=3, batch_size=16, num_workers=2, checkpoint_every_steps=2,
                      storage_path=str(tmp_path / "runs"), run_name="node-death",
                      max_failures=2, use_gpu="no")
    workers = set(_alive_worker_nodes(c))

    def pick() -> str | None:
        return next((node for _, node in _log(log) if node in workers), None)

    killed = _remove_when(c, lambda: len(_log(log)) >= 14, pick)  # after step 7 of 18
    result = train(SlowLineFit(log=str(log)), cfg)
    killed["thread"].join(timeout=60)
    assert "node" in killed and killed["node"] not in _alive_worker_nodes(c), killed
    assert result.steps == 18
    assert result.model.weight.item() > 1.5
    lines = _log(log)
    first_pids = {pid for pid, node in lines[:14]}
    after = [pid for pid, _ in lines if pid not in first_pids]  # the restarted worker group
    assert after and len(after) % 2 == 0
    restored = 18 - len(after) // 2  # the step the restarted group continued from
    print(f"node removed after {len(lines) - len(after)} step calls; resumed from step "
          f"{restored} of 18")
    assert restored >= 2, "training restarted from scratch instead of the last checkpoint"
    assert restored <= (len(lines) - len(after)) // 2
