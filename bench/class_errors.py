"""
Direction error of a trained encoder per sound class: its own heads (azimuth, elevation, distance) on single
sources of the eval clips in eval rooms, per class: MAE (great circle, deg), left/right, front/behind and
above/below accuracy (sign of the predicted direction's right / front / up part against the truth) and DER.
The first 200 items are train_encoder.py's fixed eval set (same seed), whose overall figures are printed too;
the per-class rows use all `items` (every eval clip several times, each time with its own seeded eval-room IR).

    python bench/class_errors.py --ckpt=out/demo/encoder/ckpt.pt                 # ~1 min on 2 cores
    python bench/class_errors.py --ckpt=out/x/ckpt.pt --sources=out/x/sources/sources.jsonl --out=out/x/classes.md
    python bench/class_errors.py --sources=out/real_sources/sources.jsonl --split= --items=312     # real clips
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import features
from spatial_ast import load_checkpoint
from train_encoder import ClipIRData, fixed_eval_set, ir_targets, multi_hot, score, spatialise

# --- config ---
ckpt = 'out/demo/encoder/ckpt.pt'           # train_encoder.py checkpoint
sources = 'out/demo/sources/sources.jsonl'  # its eval split is scored
split = 'eval'                              # which records of it: 'eval' | 'train' | '' (all, e.g. real clips)
render_dir = 'out/demo/rirs'                # eval-room IRs
items = 1200                                # eval items (>= 200; ~48 per class with the demo's 25 classes)
seed = 1337                                 # train_encoder.py's seed: the first 200 items are its fixed eval set
clip_seconds = 2.0
rir_seconds = 0.5
batch_size = 64
out = ''                                    # '' | also write the table (markdown) here
device = 'cpu'
# ---
exec(open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configurator.py')).read())


def signs(az_deg, el_deg):
    """(n,) degrees -> (n, 3) bool: right, front, up."""
    az, el = np.radians(az_deg), np.radians(el_deg)
    return np.stack([np.cos(az) > 0, np.sin(az) > 0, el > 0], 1)


@torch.no_grad()
def predict(model, eval_items, srcs, rirs, classes):
    """-> class scores (n, C), predictions (n, 3) and truths (n, 3) as (distance class, azimuth, elevation class)."""
    data = ClipIRData(srcs, rirs, classes, features.AudioCache(), 32000, clip_seconds, rir_seconds)
    scores, preds, gts = [], [], []
    for start in range(0, len(eval_items), batch_size):
        chunk = eval_items[start:start + batch_size]
        dry = np.stack([data.clip(i) for i, _ in chunk])[:, None]  # (B, 1, N)
        rir = np.stack([data.rir(j) for _, j in chunk])[:, None]  # (B, 1, 2, L)
        c, d, a, e = model(features.binaural_features(spatialise(dry, rir, np.ones(len(chunk), np.int64), device)))
        scores.append(torch.sigmoid(c.float()).cpu().numpy())
        preds.append(torch.stack([d.argmax(-1), a.argmax(-1), e.argmax(-1)], 1).cpu().numpy())
        gts.append(np.array([ir_targets(rirs[j]) for _, j in chunk]))
    return np.concatenate(scores), np.concatenate(preds), np.concatenate(gts)


def rows_of(pred, gt):
    """Figures of a set of items: MAE, left/right, front/behind, above/below (%), DER (%)."""
    err = score(np.zeros((len(pred), 1)), np.zeros((len(pred), 1)), pred, gt)
    ok = signs(pred[:, 1], pred[:, 2] - 90) == signs(gt[:, 1], gt[:, 2] - 90)  # (n, 3)
    return {'MAE': err['MAE_deg'], 'LR': 100 * ok[:, 0].mean(), 'FB': 100 * ok[:, 1].mean(),
            'AB': 100 * ok[:, 2].mean(), 'DER': err['DER'], 'ER20': err['ER20']}


if __name__ == '__main__':
    torch.manual_seed(0)
    model, ck = load_checkpoint(ckpt, device)
    classes = ck['classes']
    srcs = [s for s in features.read_sources(sources) if not split or s['split'] == split]
    rirs = features.read_rirs(render_dir, 'eval')
    eval_items = fixed_eval_set(srcs, rirs, max(items, 200), seed)
    scores, pred, gt = predict(model, eval_items, srcs, rirs, classes)
    labels = np.stack([multi_hot(srcs[i]['labels'], classes) for i, _ in eval_items])
    fixed = {**score(scores[:200], labels[:200], pred[:200], gt[:200]), **rows_of(pred[:200], gt[:200])}
    allr = {**score(scores, labels, pred, gt), **rows_of(pred, gt)}
    lines = [f"encoder {ckpt} on {sources} ({split or 'all'} records), {render_dir} eval IRs", '',
             '| items | mAP | ER20 % | MAE deg | DER % | left/right % | front/behind % | above/below % |',
             '|---|---|---|---|---|---|---|---|']
    for name, r in (('fixed 200', fixed), (f'all {len(eval_items)}', allr)):
        mAP = '-' if r['mAP'] is None else f"{r['mAP']:.1f}"  # no known class among real clips' labels
        lines.append(f"| {name} | {mAP} | {r['ER20']:.1f} | {r['MAE_deg']:.1f} | {r['DER']:.1f} | "
                     f"{r['LR']:.1f} | {r['FB']:.1f} | {r['AB']:.1f} |")
    lines += ['', '| class | n | MAE deg | left/right % | front/behind % | above/below % | DER % |',
              '|---|---|---|---|---|---|---|']
    first = np.array([srcs[i]['labels'][0] for i, _ in eval_items])
    for c in sorted(set(first), key=lambda c: classes.index(c) if c in classes else 0):
        m = first == c
        r = rows_of(pred[m], gt[m])
        lines.append(f"| {c} | {m.sum()} | {r['MAE']:.1f} | {r['LR']:.1f} | {r['FB']:.1f} | {r['AB']:.1f} | {r['DER']:.1f} |")
    text = '\n'.join(lines)
    print(text)
    if out:
        with open(out, 'w') as f:
            f.write(text + '\n')
