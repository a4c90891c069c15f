#!/usr/bin/env bash
# Creates the local virtual environment .venv (once) and installs what nanoBAT needs into it.
# Used by demo.sh (runtime) and test.sh (runtime + tests). Usage: source scripts/setup_env.sh [dev]
# Env: PYTHON (default python3, needs 3.10+), NANOBAT_VENV (default .venv),
#      TORCH_INDEX_URL (optional pip index for a CPU-only torch wheel on machines without an NVIDIA GPU).
set -euo pipefail
VENV="${NANOBAT_VENV:-.venv}"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "nanoBAT needs Python 3.10+, found " + sys.version' \
  || { echo "setup_env: $PY is older than 3.10; set PYTHON=python3.11 (or newer)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
want="requirements.txt"; [ "${1:-}" = dev ] && want="requirements-dev.txt"
# skip the pip calls when nothing changed since the last successful install
stamp="$VENV/.setup-stamp-$(cat requirements.txt requirements-dev.txt scripts/setup_env.sh | "$VPY" -c 'import sys,hashlib; print(hashlib.sha1(sys.stdin.buffer.read()).hexdigest()[:12])')-${1:-run}"
if [ ! -f "$stamp" ]; then
  pipi() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }
  if ! "$VPY" -c 'import torch' 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      pipi 'torch>=2.4,<2.15'                       # CUDA build
    elif [ -n "${TORCH_INDEX_URL:-}" ]; then
      pipi torch==2.13.0 --index-url "$TORCH_INDEX_URL"  # CPU build from the given index
    else
      pipi torch==2.13.0                            # the pinned release (a CPU build where a local wheel cache has one)
    fi
  fi
  pipi -r "$want"
  # slab carries the measured MIT KEMAR HRTF; only its data file is read (import slab needs PortAudio), so no deps
  pipi --no-deps slab==1.8.2
  touch "$stamp"
fi
