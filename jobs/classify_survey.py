"""Ray job: classify every source of a survey (same options as `galscale classify`).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/classify_survey.py --survey s3://bucket/field.zarr \\
        --out s3://bucket/catalogs/run1 --run-id run1

Exit status 0 when every tile finished, 1 when any failed (rerun with the same --run-id).
"""

from __future__ import annotations

import argparse
import sys

from galscale.cli import add_classify_arguments, run_classify, run_reporting_input_errors


def build_parser() -> argparse.ArgumentParser:
    """The job's argument parser (also used by the cluster manifests' tests)."""
    parser = argparse.ArgumentParser(prog="jobs/classify_survey.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_classify_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_reporting_input_errors("jobs/classify_survey.py", lambda: run_classify(args))


if __name__ == "__main__":
    sys.exit(main())
