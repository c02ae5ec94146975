#!/usr/bin/env bash
# Install galscale and everything it needs into ./.venv on a fresh Debian machine.
# Idempotent: a second run only checks. Used by `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# escnn depends on py3nj, which builds from source with a Fortran compiler.
if ! command -v gfortran >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gfortran >/dev/null
  else
    echo "galscale needs gfortran (Debian: sudo apt-get install gfortran) to build py3nj for escnn" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.galscale-installed
want=$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q -U pip wheel setuptools
  # Every install goes through the constraints file: it keeps NumPy < 2 for escnn.
  .venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[test]"
  echo "$want" > "$stamp"
fi
.venv/bin/python -c "import galscale.models.escnn_compat as c; c.check_install()"
