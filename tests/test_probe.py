"""bench/probe_tokens.py's linear probe: a separable axis is read, a label the inputs do not hold is not."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))
from probe_tokens import probe_accuracy  # noqa: E402


def test_probe_reads_a_linear_cue_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 40)) * rng.uniform(0.1, 10.0, 40)  # dimensions on very different scales
    w = rng.standard_normal(40) / np.abs(x).mean(0)  # the cue is spread over every dimension
    y = x @ w > 0
    assert probe_accuracy(x[:400], y[:400], x[400:], y[400:]) > 90.0
    noise = rng.random(600) > 0.5  # labels unrelated to the inputs
    assert abs(probe_accuracy(x[:400], noise[:400], x[400:], noise[400:]) - 50.0) < 12.0
