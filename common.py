"""
Small helpers that several stages share, kept here so they are written once:
- the geometry of docs/conventions.md (Habitat axes, class indices and answer words), the question types and the
  curriculum stages,
- average precision and mAP (encoder and BAT evaluation), the lr schedule (both training scripts),
- reading record files (our JSONL, or the official {"data": [...]} JSON) with errors that name file and line,
- atomic writes (temp file + rename, so an interrupted run never leaves a half-written output),
- a progress line for long loops (done/total, rate, ETA).
No torch here: render.py and make_qa.py use it without touching a model.
"""
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

# -----------------------------------------------------------------------------
# geometry (docs/conventions.md). Habitat axes: +X right, +Y up, -Z front; listener faces -Z.

def parse_xyz(s):
    """'x,y,z' (or a 3-sequence) -> (x, y, z) floats."""
    if isinstance(s, str):
        parts = s.split(',')
        if len(parts) != 3:
            raise ValueError(f"expected a position 'x,y,z', got {s!r}")
        return tuple(float(p) for p in parts)
    x, y, z = s
    return float(x), float(y), float(z)


def format_xyz(p):
    return ','.join(f'{float(v):.4f}' for v in p)


def offset(sensor, source):
    """(dx, dy, dz) = source - sensor, in metres."""
    (sx, sy, sz), (px, py, pz) = parse_xyz(sensor), parse_xyz(source)
    return px - sx, py - sy, pz - sz


def distance_m(d):
    return math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)


def distance_class(d):
    """0..20: round(2*|d|), 0.5 m steps over 0-10 m."""
    return int(round(2 * distance_m(d)))


def azimuth_deg(d):
    """0 = right, 90 = front, 180 = left, 270 = behind (integer degrees, 0..359)."""
    dx, _, dz = d
    return int(round(math.degrees(math.atan2(-dz, dx)))) % 360


def elevation_deg(d):
    """-90..90 integer degrees, positive up."""
    dx, dy, dz = d
    return int(round(math.degrees(math.atan(dy / max(math.hypot(dx, dz), 1e-12)))))


def elevation_class(d):
    """0..179: (elevation + 90) % 180, as the official code (so +90 wraps to 0)."""
    return (elevation_deg(d) + 90) % 180


# the three word pairs of a direction answer, in answer order (first word: -X, -Z, +Y)
WORD_PAIRS = (('left', 'right'), ('front', 'behind'), ('above', 'below'))


def direction_words(d):
    """('left'|'right', 'front'|'behind', 'above'|'below')."""
    dx, dy, dz = d
    (left, right), (front, behind), (above, below) = WORD_PAIRS
    return (left if dx < 0 else right, front if dz < 0 else behind, above if dy > 0 else below)


def distance_words(meters):
    """Distance rounded to 0.5 m, written 0.5m, 1m, 1.5m, ... 10m."""
    half = int(round(2 * meters))
    return f'{half // 2}m' if half % 2 == 0 else f'{half / 2:.1f}m'


def targets_of(sensor, source):
    """All spatial targets of one source: what QA records carry and what the encoder learns."""
    d = offset(sensor, source)
    return {'azimuth': azimuth_deg(d), 'elevation': elevation_deg(d), 'distance': round(distance_m(d), 4),
            'distance_class': distance_class(d), 'direction': list(direction_words(d))}

# -----------------------------------------------------------------------------
# question types (docs/conventions.md) and their Table-13 letters, in curriculum order

TYPE_LETTER = {'CLASSIFICATION': 'A', 'DOA': 'B', 'MIXUP_SINGLE_CLASSIFICATION': 'C', 'MIXUP_SINGLE_DOA': 'D',
               'MIXUP_DIRECTION': 'E', 'MIXUP_DISTANCE_BOTH': 'E', 'MIXUP_NONBINARY_DIRECTION': 'E',
               'MIXUP_NONBINARY_DISTANCE': 'E', 'MIXUP_NONBINARY_SOURCE': 'E'}
STAGE_LETTERS = {1: 'AB', 2: 'ABCD', 3: 'ABCDE'}  # the curriculum: I perception, II + mixtures, III + reasoning


def stage_types(stage):
    """The question types of curriculum stage 1, 2 or 3, in TYPE_LETTER order."""
    return [t for t, letter in TYPE_LETTER.items() if letter in STAGE_LETTERS[int(stage)]]

# -----------------------------------------------------------------------------
# metrics and schedules

def average_precision(scores, labels):
    """AP of one class, as sklearn's average_precision_score: sum over the distinct score thresholds, highest first,
    of (recall gained) x (precision there); tied scores form one threshold. labels: 0/1 (or bool). None when the
    class has no positive (AP is undefined there)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0.5
    n_pos = labels.sum()
    if n_pos == 0:
        return None
    order = np.argsort(-scores, kind='mergesort')
    s, y = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each group of tied scores
    tp = np.cumsum(y)[last]
    precision, recall = tp / (last + 1), tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_ap(scores, labels):
    """Mean AP over the classes (columns) with at least one positive; classes without one are left out (not
    counted as 0). scores, labels: (N, C). None when no class has a positive."""
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(np.shape(labels)[1])]
    aps = [a for a in aps if a is not None]
    return float(np.mean(aps)) if aps else None


def get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters, schedule='cosine'):
    """'cosine': linear warmup over warmup_iters, then half-cycle cosine down to min_lr at lr_decay_iters, min_lr after.
    'linear': the released BAT recipe's LambdaLR, learning_rate * it / warmup_iters, then a straight line to 0 at
    lr_decay_iters (0 after it)."""
    if schedule == 'linear':
        if it < warmup_iters:
            return learning_rate * it / warmup_iters
        return learning_rate * max(0.0, 1 - (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters))
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


# -----------------------------------------------------------------------------
# record files

def read_records(path):
    """JSONL (one object a line) or the official JSON {"data": [...]}. Errors name the file and line."""
    with open(path) as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith('{"data"') or stripped.startswith('{\n') or stripped.startswith('['):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # maybe JSONL whose first record is pretty; fall through
        if isinstance(obj, dict) and 'data' in obj:
            return list(obj['data'])
        if isinstance(obj, list):
            return obj
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object a line") from None
    return records


def require(record, keys, where):
    """Raise a clear error if a record lacks keys. `where` is e.g. 'file.jsonl:12'."""
    missing = [k for k in keys if k not in record]
    if missing:
        raise KeyError(f"{where}: missing key(s) {missing}; expected at least {list(keys)}")

# -----------------------------------------------------------------------------
# atomic writes

def atomic_write(path, write_fn, mode='w'):
    """Call write_fn(file) on a temp file beside `path`, then rename over it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_jsonl(path, records):
    atomic_write(path, lambda f: f.writelines(json.dumps(r) + '\n' for r in records))


def write_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2))


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text))

# -----------------------------------------------------------------------------
# progress

class Progress:
    """Prints 'name done/total (pct) rate/s ETA' at most every `every` seconds, and once at the end."""

    def __init__(self, total, name='', every=5.0, unit='it'):
        self.total, self.name, self.every, self.unit = total, name, every, unit
        self.done, self.t0, self.last = 0, time.time(), 0.0

    def update(self, n=1):
        self.done += n
        now = time.time()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            print(f"{self.name} {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%) "
                  f"{rate:.1f} {self.unit}/s ETA {eta:.0f}s", file=sys.stdout, flush=True)
