#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
#
# The autograder zip holds this file, run_autograder, and gradkit itself: its source folder
# (a copy of the repository, as gradkit/) or a wheel (gradkit-*.whl, from `pip wheel --no-deps .`).
# Every setting below can be changed with an environment variable of the same name.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# where gradkit is installed; run_autograder reads it from /opt/gradkit too
GRADKIT_VENV="${GRADKIT_VENV:-/opt/gradkit}"
# torch first, so pip does not pick a multi-GB GPU build: put a CPU build's requirement here
# (with PIP_INDEX_URL or PIP_EXTRA_INDEX_URL set to PyTorch's CPU wheel index), or "" to skip
GRADKIT_TORCH="${GRADKIT_TORCH-torch==2.13.0}"
# extra options for `python3 -m venv` (tests use --system-site-packages)
GRADKIT_VENV_OPTIONS="${GRADKIT_VENV_OPTIONS:-}"
# extra options for pip (tests use --no-deps --no-build-isolation)
GRADKIT_PIP_OPTIONS="${GRADKIT_PIP_OPTIONS:-}"

if [ -z "${GRADKIT_SOURCE:-}" ]; then
    wheel="$(ls "$HERE"/gradkit-*.whl 2>/dev/null | head -n 1 || true)"
    GRADKIT_SOURCE="${wheel:-$HERE/gradkit}"
fi
if [ ! -e "$GRADKIT_SOURCE" ]; then
    echo "setup.sh: no gradkit to install: put gradkit's source folder (gradkit/) or a" \
         "gradkit-*.whl next to setup.sh, or set GRADKIT_SOURCE" >&2
    exit 1
fi

if ! command -v python3 >/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get install -y python3 python3-venv python3-pip
fi
# shellcheck disable=SC2086  # options are words on purpose
python3 -m venv $GRADKIT_VENV_OPTIONS "$GRADKIT_VENV"
if [ -n "$GRADKIT_TORCH" ]; then
    # shellcheck disable=SC2086
    "$GRADKIT_VENV/bin/python" -m pip install --quiet $GRADKIT_PIP_OPTIONS "$GRADKIT_TORCH"
fi
# shellcheck disable=SC2086
"$GRADKIT_VENV/bin/python" -m pip install --quiet $GRADKIT_PIP_OPTIONS "$GRADKIT_SOURCE"
"$GRADKIT_VENV/bin/python" -m gradkit --version
