#!/usr/bin/env bash
# Set up .venv with the test extras, then run the test suite (CPU only; tests needing optional local data skip).
# Usage: bash test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# tests spread over one worker per core (pytest-xdist); a file marked xdist_group stays on one worker, so its module
# fixture is built once. NANOBAT_TEST_WORKERS=0 runs them all in this process
exec .venv/bin/python -m pytest -q -n "${NANOBAT_TEST_WORKERS:-2}" --dist loadgroup "${@:-tests}"
