"""Ray job: train the U-Net VAE denoiser (same options as `galscale train denoiser`).

    ray job submit --working-dir . -- python jobs/train_denoiser.py --num-workers 4 \
        --images /data/gz2_spiral_train \
        --storage-path s3://bucket/runs --out runs/denoiser-model
"""

import sys

from galscale.cli import train_job_main

if __name__ == "__main__":
    sys.exit(train_job_main("denoiser", __doc__))
