#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit tests on moto, integration tests on
# DynamoDB Local (started by a pytest fixture on a free port), and the docs' code samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# one pytest worker per core (each with its own DynamoDB Local); DYN_TEST_WORKERS=0 runs in this process
exec .venv/bin/python -m pytest -n "${DYN_TEST_WORKERS:-auto}" "$@"
