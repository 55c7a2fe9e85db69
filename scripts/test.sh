#!/usr/bin/env bash
# The whole test suite: `make test` runs this after installing the dev dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

scripts/install-services.sh

echo "== ruff" >&2
$BIN/ruff check
$BIN/ruff format --check
echo "== mypy --strict (src, examples)" >&2
$BIN/mypy
$BIN/mypy --strict examples
echo "== pytest" >&2
$BIN/pytest "$@"
