#!/usr/bin/env bash
# Set up .venv with the test extras, then run the test suite (CPU only; tests needing optional local data skip).
# Usage: bash test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "${@:-tests}"
