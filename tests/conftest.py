import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stage scripts and model files live flat at the repo root
os.chdir(ROOT)  # scripts read configurator.py and config/ relative to the repo root

# the outside references the tests compare our code with (requirements-dev.txt): a missing one fails the run, never
# skips tests, so a broken install cannot pass with nothing checked against them
REFERENCES = {'librosa': 'mel filters and STFT (features.py)', 'pyroomacoustics': 'image sources (render.py)',
              'transformers': 'LLaMA logits and checkpoints (llama.py)', 'peft': 'LoRA (llama.py)',
              'slab': 'the measured KEMAR HRTF (render.py)'}


if os.environ.get('PYTEST_XDIST_WORKER'):
    # test.sh runs one worker per core (pytest-xdist): each worker, and the scripts its tests start, keeps to one
    # thread, so two workers never fight over the two cores (torch's OpenMP barriers stall badly when they do)
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'
    import torch
    torch.set_num_threads(1)


def pytest_sessionstart(session):
    missing = [f'{name} ({why})' for name, why in REFERENCES.items() if importlib.util.find_spec(name) is None]
    if missing:
        pytest.exit(f"reference libraries missing: {', '.join(missing)}. Install the test requirements: "
                    f".venv/bin/pip install -r requirements-dev.txt (slab: pip install --no-deps slab==1.8.2), "
                    f"or run bash test.sh", returncode=3)


@pytest.fixture(scope='module')
def one_thread():
    """Tiny matrices: a second thread only adds barrier waits, which get long when other jobs share the cores.
    A module asks for it with `pytestmark = pytest.mark.usefixtures('one_thread')`."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
