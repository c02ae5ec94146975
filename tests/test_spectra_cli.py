"""The spectral sub-commands end to end: simulate-spectra -> embed-spectra -> assign."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from galscale.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "galscale" / "weights" / "spectral"
pytestmark = pytest.mark.skipif(not (SHIPPED / "embedding.json").exists(),
                                reason="no shipped spectral model")


def test_simulate_embed_assign_commands(tmp_path, capsys):
    table = tmp_path / "sim.parquet"
    assert main(["simulate-spectra", "--n", "400", "--seed", "3", "--out", str(table)]) == 0
    assert pq.read_metadata(table).num_rows == 400
    out = tmp_path / "embed"
    assert main(["embed-spectra", "--spectra", str(table), "--vae", "spectral", "--out", str(out),
                 "--k-min", "5", "--k-max", "7", "--gmm-restarts", "1"]) == 0
    summary = json.loads((out / "embedding_summary.json").read_text())
    assert 5 <= summary["k"] <= 7 and summary["n_spectra"] == 400
    cat = pq.read_table(out / "spectral_catalog.parquet").to_pandas()
    assert len(cat) == 400 and {"latent_15", "umap_x", "cluster", "flag_reason"} <= set(cat)
    medians = pq.read_table(out / "cluster_median_spectra.parquet")
    assert medians.num_rows == summary["k"] and sum(medians.column("n_spectra").to_pylist()) == (
        cat["cluster"] >= 0).sum()
    for name in ("spectra_medians.png", "spectra_redshifts.png", "spectra_umap.png"):
        assert (out / name).stat().st_size > 10_000
    # assigning the same spectra with the saved model puts every one back into its cluster
    # (fitted points keep their fitted map position); flagged rows stay flagged
    assigned = tmp_path / "assigned.parquet"
    assert main(["assign", "--spectra", str(table), "--model", str(out / "model"),
                 "--out", str(assigned)]) == 0
    again = pq.read_table(assigned).to_pandas()
    np.testing.assert_array_equal(again["id"].to_numpy(), cat["id"].to_numpy())
    np.testing.assert_array_equal(again["flags"].to_numpy(), cat["flags"].to_numpy())
    np.testing.assert_array_equal(again["latent_03"].to_numpy(), cat["latent_03"].to_numpy())
    np.testing.assert_array_equal(again["cluster"].to_numpy(), cat["cluster"].to_numpy())
    capsys.readouterr()
