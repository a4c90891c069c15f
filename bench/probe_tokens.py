"""
Where a trained encoder keeps or loses each direction axis: a linear probe (L2 logistic regression) per axis on what
each stage of the encoder outputs for single sources: the input features (time average), the conv stem, the patch
embedding (each averaged over time), and the token sequence BAT reads (the mean patch token, the direction [CLS]).
Fit on the clips of one class placed by the training IRs, scored on the eval clips placed by the eval-room IRs.
A probe far above the encoder's own heads means the cue reaches that stage and is not used after it.

    python bench/probe_tokens.py --ckpt=out/demo/encoder/ckpt.pt                    # ~2 min on 2 cores
    python bench/probe_tokens.py --ckpt=out/demo/encoder/ckpt.pt --label='Pink noise' --out=out/probe.md
    python bench/probe_tokens.py --ckpt=out/demo/encoder/ckpt.pt --label=  # clips of every class
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import features
from spatial_ast import load_checkpoint
from train_encoder import ClipIRData, spatialise

# --- config ---
ckpt = 'out/demo/encoder/ckpt.pt'           # train_encoder.py checkpoint
sources = 'out/demo/sources/sources.jsonl'  # clips of `label`: train split to fit, eval split to score
render_dir = 'out/demo/rirs'                # every train IR (fit) and every eval IR (score), one clip each
label = 'White noise'                       # broadband: the pinna cues of every band are there to be read;
                                            # '' = clips of every class (cues that must hold whatever the spectrum)
clip_seconds = 2.0
rir_seconds = 0.5
batch_size = 32
l2 = 1e-2                                   # the probe's weight decay (inputs standardised per dimension)
out = ''                                    # '' | also write the table (markdown) here
device = 'cpu'
# ---
AXES = ('left', 'front', 'above')  # the first word of each axis, as in the IR records' 'direction'


@torch.no_grad()
def stage_outputs(model, split, rng):
    """Every IR of `split` with a random clip of `label` -> ({stage: (n, d) array}, (n, 3) bool: left, front, above)."""
    srcs = [s for s in features.read_sources(sources) if s['split'] == split and (not label or label in s['labels'])]
    rirs = features.read_rirs(render_dir, split)
    assert srcs, f'no {split} clips labelled {label!r} in {sources}'
    data = ClipIRData(srcs, rirs, [label or 'any'], features.AudioCache(), 32000, clip_seconds, rir_seconds)
    outs, truth = {}, []
    for start in range(0, len(rirs), batch_size):
        js = range(start, min(start + batch_size, len(rirs)))
        dry = np.stack([data.clip(int(rng.integers(len(srcs)))) for _ in js])[:, None]  # (B, 1, N)
        rir = np.stack([data.rir(j) for j in js])[:, None]  # (B, 1, 2, L)
        x = features.binaural_features(spatialise(dry, rir, np.ones(len(js), np.int64), device))  # (B, 4, T, M)
        stem = model.front(x)  # (B, C, n_frames, M)
        emb = model.patch_embed(stem).reshape(len(js), model.grid_t, model.grid_f, -1)  # (B, t, f, D)
        tok = model.tokens(x)  # (B, 3 + t*f, D)
        for name, v in (('features', x.mean(2)), ('stem', stem.mean(2)), ('patch embedding', emb.mean(1)),
                        ('mean patch token', tok[:, 3:].mean(1)), ('direction [CLS]', model.doa_norm(tok[:, 1]))):
            outs.setdefault(name, []).append(v.flatten(1).float().cpu().numpy())
        truth += [[rirs[j]['direction'][k] == w for k, w in enumerate(AXES)] for j in js]
    return {k: np.concatenate(v) for k, v in outs.items()}, np.array(truth)


def probe_accuracy(xt, yt, xe, ye, l2=l2, steps=300):
    """L2 logistic regression on standardised inputs (full-batch L-BFGS) -> eval accuracy, %."""
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    xt, xe = (torch.from_numpy((a - mu) / sd).float() for a in (xt, xe))
    w = torch.zeros(xt.shape[1] + 1, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn='strong_wolfe')
    y = torch.from_numpy(yt).float()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w[:-1] + w[-1], y) + l2 * w[:-1].square().sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return 100.0 * float((((xe @ w[:-1] + w[-1]) > 0).numpy() == ye).mean())


if __name__ == '__main__':
    exec(open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configurator.py')).read())
    torch.manual_seed(0)
    model, _ = load_checkpoint(ckpt, device)
    model.eval()
    rng = np.random.default_rng(0)
    (xt, yt), (xe, ye) = stage_outputs(model, 'train', rng), stage_outputs(model, 'eval', rng)
    lines = [f'linear probes on {ckpt}: {label}, fit on {len(yt)} train-room items, scored on {len(ye)} eval-room items',
             '', '| stage output | left/right % | front/behind % | above/below % |', '|---|---|---|---|']
    for name in xt:
        accs = [probe_accuracy(xt[name], yt[:, k], xe[name], ye[:, k], l2) for k in range(3)]
        lines.append(f'| {name} | ' + ' | '.join(f'{a:.1f}' for a in accs) + ' |')
    print('\n'.join(lines))
    if out:
        from common import write_text
        write_text(out, '\n'.join(lines) + '\n')
