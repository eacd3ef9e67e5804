#!/usr/bin/env bash
# Build a wheelhouse for a closed network (LGWAN): run on a machine that reaches PyPI, carry the
# folder across, install there with no index.
#
#   bash scripts/wheelhouse.sh [EXTRAS] [DIR]      # EXTRAS: "" (inference only, default) or "train"
#   pip install --no-index --find-links DIR idou   # on the closed machine (idou[train] for training)
#
# The closed machine must match this one (OS, CPU, Python version) unless PLATFORM is set: then
# the dependencies are downloaded as binary wheels for that platform and Python, e.g. for
# Windows terminals:  PLATFORM=win_amd64 PYVER=3.11 bash scripts/wheelhouse.sh "" wheelhouse-win
# DIR/SHA256SUMS lets the closed side check the copy: (cd DIR && sha256sum -c SHA256SUMS).
# Tested by tests/robustness/test_lgwan_wheelhouse.py.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${1:-}
DIR=${2:-wheelhouse}
PY=${PYTHON:-python3}
spec="."
[ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
mkdir -p "$DIR"
if [ -z "${PLATFORM:-}" ]; then
    "$PY" -m pip wheel --quiet --wheel-dir "$DIR" "$spec"
else
    # idou itself is pure Python; its dependencies are fetched as the target's binary wheels
    "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DIR" .
    reqs=$(mktemp)
    trap 'rm -f "$reqs"' EXIT
    "$PY" - "$EXTRAS" > "$reqs" <<'EOF'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = [e for e in sys.argv[1].split(",") if e]
for req in project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]:
    print(req)
EOF
    "$PY" -m pip download --quiet --only-binary=:all: --platform "$PLATFORM" \
        --python-version "${PYVER:-3.11}" --dest "$DIR" -r "$reqs"
fi
(cd "$DIR" && sha256sum -- *.whl > SHA256SUMS)
echo "wheelhouse for '${spec}'${PLATFORM:+ ($PLATFORM, Python ${PYVER:-3.11})} in $DIR: $(find "$DIR" -name '*.whl' | wc -l) wheels"
