#!/usr/bin/env bash
# P(disk) on survey cutouts against truth for several morphology-cutout framings
# (--morph-side-per-radius K: the cutout shows K flux radii; 0: 256 native pixels), on a
# simulated 4096 px field that is not the one docs/morphology.md reports on (seed 11).
#   bash benchmarks/morphology_framing.sh [SEED] [WORKDIR]   (from the repository root; ~10 min
#   on 2 cores)
# Writes benchmarks/results/morphology_framing.json.
set -euo pipefail
seed=${1:-12}
work=${2:-$(mktemp -d)}
bin=$(dirname "$0")/../.venv/bin
"$bin/galscale" simulate --out "$work/field" --seed "$seed" --size 4096 --n-sources 3000 > /dev/null
for k in 12 16 24 0; do
  RAY_ADDRESS=local "$bin/galscale" classify --survey "$work/field/survey.zarr" --out "$work/runs" \
    --run-id "k$k" --morph-side-per-radius "$k" --stages morphology --quiet > "$work/k$k.log" 2>&1
  "$bin/galscale" evaluate catalog "$work/runs/k$k/catalog.parquet" "$work/field/truth.parquet" \
    --out "$work/k$k.json" > /dev/null
done
"$bin/python" - "$work" "$seed" <<'PY'
import json, sys
from pathlib import Path
work, seed = Path(sys.argv[1]), int(sys.argv[2])
keys = ("disk_galaxies_scored", "disk_accuracy", "disk_majority_baseline", "disk_roc_auc",
        "disk_roc_auc_95ci", "disk_resolved_definition", "disk_resolved_scored",
        "disk_resolved_accuracy", "disk_resolved_roc_auc", "disk_resolved_roc_auc_95ci")
out = {"field": {"seed": seed, "size_px": 4096, "n_sources": 3000},
       "command": "bash benchmarks/morphology_framing.sh " + str(seed),
       "morph_side_per_radius": {}}
for k in (12, 16, 24, 0):
    r = json.loads((work / f"k{k}.json").read_text())
    out["morph_side_per_radius"]["native 256 px" if k == 0 else str(k)] = {n: r[n] for n in keys}
dest = Path("benchmarks/results/morphology_framing.json")
dest.write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out, indent=1))
PY
