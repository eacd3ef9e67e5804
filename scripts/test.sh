#!/usr/bin/env bash
# Set up a virtual environment with every extra and run the checks CI runs:
# ruff, mypy and pytest. Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[train,dev]'
export NO_ALBUMENTATIONS_UPDATE=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
MLFLOW_TRACKING_URI="sqlite:///$(mktemp -d)/mlflow.db"
export MLFLOW_TRACKING_URI
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy idou geo inference training models
echo "== pytest"
set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
