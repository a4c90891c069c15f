"""
How much of each synthesised class's energy lies where the pinna cues are: per class of the embedded bank
(sources.SYNTH_CLASSES), the median over `clips` clips of the fraction of energy above `split_hz`, and the
median spectral centroid. Front/behind and above/below are cued mostly above ~4-5 kHz, so a class with almost
nothing there can only be told left from right.

    python bench/bank_spectra.py                       # 25 classes x 8 clips of 2 s (a few seconds on 1 core)
    python bench/bank_spectra.py --clips=16 --split_hz=6000
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sources

# --- config ---
clips = 8              # clips per class (indices 0..clips-1, the first train clips of the demo bank)
clip_seconds = 2.0     # as the demo bank
seed = 1337            # the demo bank's seed
split_hz = 4000.0      # energy above this frequency is counted
sample_rate = 32000
device = 'cpu'         # unused; accepted like every script
# ---
exec(open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configurator.py')).read())


def spectrum_stats(x, sr, split):
    """(fraction of energy above split Hz, spectral centroid Hz) of one clip."""
    p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return float(p[f > split].sum() / max(p.sum(), 1e-30)), float((p * f).sum() / max(p.sum(), 1e-30))


def bank_table(clips, clip_seconds, seed, split, sr):
    """{class: (median fraction above split, median centroid)} over the first `clips` clips of every class."""
    out = {}
    for name in sources.SYNTH_CLASSES:
        stats = np.array([spectrum_stats(sources.synth_clip(name, seed, i, clip_seconds, sr), sr, split)
                          for i in range(clips)])
        out[name] = (float(np.median(stats[:, 0])), float(np.median(stats[:, 1])))
    return out


if __name__ == '__main__':
    table = bank_table(clips, clip_seconds, seed, split_hz, sample_rate)
    print(f'| class | energy above {split_hz / 1000:g} kHz % (median of {clips}) | centroid Hz (median) |')
    print('|---|---|---|')
    for name, (frac, centroid) in table.items():
        print(f'| {name} | {100 * frac:.2f} | {centroid:.0f} |')
    low = [n for n, (frac, _) in table.items() if frac < 0.002]
    print(f'\n{len(low)} of {len(table)} classes under 0.2 %: {", ".join(low)}')
