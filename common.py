"""
Small helpers that several stages share, kept here so they are written once:
- the geometry of docs/conventions.md (Habitat axes, class indices and answer words), the question types and the
  curriculum stages,
- average precision and mAP (encoder and BAT evaluation), the lr schedule (both training scripts),
- reading record files (our JSONL, or the official {"data": [...]} JSON) with errors that name file and line,
- atomic writes (temp file + rename, so an interrupted run never leaves a half-written output), and the removal of
  the temp files a killed run left behind,
- run folders: paths stored relative to the folder (so a run can move), a guard against starting a fresh run over
  another run's checkpoint,
- `load_weights`: torch.load that runs no code from the file (weights_only=True), with one-sentence errors,
- a progress line for long loops (done/total, rate, ETA).
No torch import at the top: render.py and make_qa.py use this file without touching a model.
"""
import json
import math
import os
import re
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


def remove_stale_temps(folder, log=print):
    """Delete the temp files (.<name>.<random>.tmp) that a run killed inside atomic_write left in folder."""
    if not os.path.isdir(folder):
        return []
    stale = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if re.fullmatch(r'\..+\.[^.]+\.tmp', n)]
    for p in stale:
        os.remove(p)
        log(f"removed {p}: the temp file of a save that was interrupted")
    return stale

# -----------------------------------------------------------------------------
# run folders

def stored_path(path, folder):
    """How a path is written into a checkpoint or meta.json kept in `folder`: relative to it, so the two can move
    together. '' stays ''."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(folder)) if path else path


def found_path(stored, folder):
    """The inverse of stored_path: a relative path is read against `folder` (absolute ones, from older files, as
    they are)."""
    return os.path.normpath(os.path.join(folder, stored)) if stored and not os.path.isabs(stored) else stored


def check_out_dir(out_dir, init_from, overwrite, script):
    """Before anything is written: a fresh run must not start in a folder that holds another run's checkpoint
    (--init_from=resume continues it, --overwrite=True replaces it), and resume needs a checkpoint."""
    ckpt = os.path.join(out_dir, 'ckpt.pt')
    if init_from == 'resume' and not os.path.isfile(ckpt):
        raise SystemExit(f"{script}: --init_from=resume but {ckpt} does not exist (nothing to resume; start with "
                         f"--init_from=scratch)")
    if init_from != 'resume' and os.path.isfile(ckpt) and not overwrite:
        raise SystemExit(f"{script}: {out_dir} already holds a run's checkpoint (ckpt.pt); continue it with "
                         f"--init_from=resume, start over in it with --overwrite=True, or choose another --out_dir")
    return ckpt

# -----------------------------------------------------------------------------
# checkpoints: loading never runs code from the file

def load_weights(path, what='checkpoint'):
    """torch.load(path, weights_only=True) on the CPU: the unpickler builds tensors, numbers, strings and plain
    containers only, so a crafted file cannot run code. One more type is allowed, argparse.Namespace, a bag of
    settings that MAE-style training scripts (AudioMAE, the official Spatial-AST) save beside the weights.
    Every failure is one sentence naming the file (SystemExit)."""
    import argparse
    import pickle
    import torch
    if not os.path.isfile(path):
        raise SystemExit(f"{what} {path}: no such file")
    if os.path.getsize(path) == 0:
        raise SystemExit(f"{what} {path}: the file is empty (0 bytes: an interrupted download or save?)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r'GLOBAL (\S+) was not an allowed global', str(e))
        kind = f"a Python object ({m.group(1)})" if m else "Python objects"
        raise SystemExit(f"{what} {path}: refused to load: it holds {kind} that unpickling would create or call, "
                         f"and such a file can run code; only tensors, numbers, strings, plain containers and "
                         f"argparse.Namespace are loaded (re-save the weights alone, as a state dict, from a copy "
                         f"you trust)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [''])[0].split('. ')[0][:120]  # its first sentence
        raise SystemExit(f"{what} {path}: not a readable PyTorch file ({type(e).__name__}: {first}); truncated, "
                         f"or not written by torch.save?") from None


def checkpoint_kind(obj):
    """What a loaded file is, from its keys: 'bat' (train_bat.py), 'encoder' (train_encoder.py), 'spatial_ast'
    (the official finetuned.pth), 'audiomae' (an AudioMAE / ViT state dict), or 'unknown'."""
    if not isinstance(obj, dict):
        return 'unknown'
    if 'base' in obj and 'model_args' in obj:
        return 'bat'
    if 'model_args' in obj and 'model' in obj:
        return 'encoder'
    sd = obj.get('model', obj.get('state_dict', obj))
    keys = {k.replace('module.', '', 1) for k in sd} if isinstance(sd, dict) else set()
    if 'distance_head.weight' in keys or 'cls_tokens' in keys:
        return 'spatial_ast'
    if 'patch_embed.proj.weight' in keys or any(k.startswith('blocks.') for k in keys):
        return 'audiomae'
    return 'unknown'


KIND_NAMES = {'bat': 'a BAT checkpoint (train_bat.py)', 'encoder': 'a Spatial-AST encoder checkpoint (train_encoder.py)',
              'spatial_ast': "the official Spatial-AST weights (finetuned.pth)",
              'audiomae': 'AudioMAE / ViT weights', 'unknown': 'no checkpoint this project writes or reads'}

# -----------------------------------------------------------------------------
# progress

class Progress:
    """Prints 'name done/total (pct) rate/s ETA' at most every `every` seconds (or, with share, each time another
    share of the total is done: share=0.1 gives about ten lines), and once at the end."""

    def __init__(self, total, name='', every=5.0, unit='it', share=0.0):
        self.total, self.name, self.every, self.unit, self.share = total, name, every, unit, share
        self.done, self.t0, self.last, self.next = 0, time.time(), 0.0, share * total

    def update(self, n=1):
        self.done += n
        now = time.time()
        due = self.done >= self.next if self.share else now - self.last >= self.every
        if due or self.done >= self.total:
            self.last = now
            while self.share * self.total > 0 and self.next <= self.done:
                self.next += self.share * self.total
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            print(f"{self.name} {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%) "
                  f"{rate:.1f} {self.unit}/s ETA {duration(eta)}", file=sys.stdout, flush=True)


def duration(seconds):
    """12s, 3m04s, 2h05m: how long, for progress lines."""
    s = int(round(seconds))
    return f'{s}s' if s < 60 else f'{s // 60}m{s % 60:02d}s' if s < 3600 else f'{s // 3600}h{s % 3600 // 60:02d}m'
