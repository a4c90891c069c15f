import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stage scripts and model files live flat at the repo root
os.chdir(ROOT)  # scripts read configurator.py and config/ relative to the repo root
