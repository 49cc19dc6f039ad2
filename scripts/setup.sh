#!/usr/bin/env bash
# Set up hsg on a fresh machine: a virtual environment in .venv with the project and its
# test extras. Idempotent; pip's own cache (~/.cache/pip) makes a second run fast.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
echo "installing hsg and its dependencies into .venv (the first time downloads torch) …" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,motifs,ray,interop]'
