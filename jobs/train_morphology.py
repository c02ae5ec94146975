"""Ray job: train the D16 disk classifier (same options as `galscale train morphology`).

    ray job submit --working-dir . -- python jobs/train_morphology.py --num-workers 4 \
        --images /data/gz2_spiral_train --denoiser runs/denoiser-model \
        --storage-path s3://bucket/runs --out runs/morphology-model
"""

from __future__ import annotations

import argparse
import sys

from galscale.cli import add_train_config_arguments, train_config_from_args
from galscale.train.morphology import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/train_morphology.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_config_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(f"model artefact written to {run(args, train_config_from_args(args))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
