#!/usr/bin/env bash
# The main job on the embedded default: set up .venv, then render rooms, synthesise sources, make QA,
# train the tiny Spatial-AST, train the tiny BAT through the 3 stages, evaluate (Table-13-style table + plots).
# Usage: bash demo.sh            (extra --key=value flags are passed to every stage, e.g. --device=cuda)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=.venv/bin/python
t0=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - t0 ))s] $*"; "$PY" "$@"; }
step render.py config/demo_render.py "$@"
step sources.py config/demo_sources.py "$@"
step make_qa.py config/demo_qa.py "$@"
# a second demo run starts the training stages over (they refuse a folder holding a run unless told)
step train_encoder.py config/demo_encoder.py --overwrite=True "$@"
step train_bat.py config/demo_bat.py --overwrite=True "$@"
step eval.py config/demo_eval.py "$@"
echo; echo "=== demo done in $(( $(date +%s) - t0 ))s; outputs under out/demo/ (table: out/demo/eval/table.md)"
