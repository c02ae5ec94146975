# The README's two set-up commands. Both install everything first (scripts/install.sh).
.PHONY: demo test install lint

install:
	bash scripts/install.sh

# Simulate a small survey, classify it end to end on a local Ray, print where the catalog went.
demo: install
	.venv/bin/galscale demo --out demo

# Lint and run the whole test suite (about 15 minutes on 2 cores).
test: install
	.venv/bin/ruff check galscale jobs tests benchmarks scripts
	.venv/bin/python -m pytest -q tests

lint: install
	.venv/bin/ruff check galscale jobs tests benchmarks scripts
