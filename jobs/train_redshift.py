"""Ray job: train the redshift-class CNN (same options as `galscale train redshift`).

    ray job submit --working-dir . -- python jobs/train_redshift.py --num-workers 4 \
        --storage-path s3://bucket/runs --out runs/redshift-model
"""

import sys

from galscale.cli import train_job_main

if __name__ == "__main__":
    sys.exit(train_job_main("redshift", __doc__))
