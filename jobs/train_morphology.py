"""Ray job: train the D16 disk classifier (same options as `galscale train morphology`).

    ray job submit --working-dir . -- python jobs/train_morphology.py --num-workers 4 \
        --images /data/gz2_spiral_train --denoiser runs/denoiser-model \
        --storage-path s3://bucket/runs --out runs/morphology-model
"""

import sys

from galscale.cli import train_job_main

if __name__ == "__main__":
    sys.exit(train_job_main("morphology", __doc__))
