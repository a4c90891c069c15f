"""
Train (or only evaluate) the Spatial-AST encoder on dry sources x binaural room impulse responses.

Every step draws fresh single-source examples: a random training clip, a random training IR (as the official code
does), waveform mixup with probability `mixup_prob` (two clips, same IR, soft labels); the IR convolution and the
features run on the device. Evaluation uses a FIXED eval set (each eval clip gets one seeded IR, so numbers compare
run to run) and prints mAP / ER20 / MAE / DER beside a random predictor and a GCC-PHAT baseline (no training).

    CPU demo (after render.py and sources.py):  python train_encoder.py config/demo_encoder.py
    one GPU, paper size:                        python train_encoder.py config/paper_encoder.py
    several GPUs:        torchrun --standalone --nproc_per_node=4 train_encoder.py config/paper_encoder.py
    the official recipes: config/paper_encoder.py = finetune-20k.sh, + config/paper_encoder_2m.py = finetune-2m.sh;
    --init_from=SpatialAST/finetuned.pth starts from the released encoder (sizes from its shapes; its class head
    follows --class_list, e.g. class_labels_indices_subset.csv, or classes.txt beside the sources)
    CPU DDP (gloo):      torchrun --standalone --nproc_per_node=2 train_encoder.py config/demo_encoder.py --device=cpu
    resume:              python train_encoder.py config/demo_encoder.py --init_from=resume
    start over:          python train_encoder.py config/demo_encoder.py --overwrite=True   (out_dir holds a run)
    evaluate on real clips it never heard (a manifest CSV of your own recordings, see sources.py):
        python sources.py --collection=manifest --path=my_clips/manifest.csv --out_dir=out/real_sources
        python train_encoder.py config/demo_encoder.py --init_from=resume --eval_only=True \\
            --eval_sources=out/real_sources/sources.jsonl --out_dir=out/demo/encoder  (writes metrics_real.json)

On a CPU shared with other jobs, OMP_NUM_THREADS=1 avoids OpenMP oversubscription (steady step times instead of
large swings for the demo model).
Two-source mixtures (two_source_prob) are off by default, as in the official encoder training: the heads predict one
position, so true mixtures only train the class head; they belong to BAT's QA stages.
Metric definitions (mAP, ER20, MAE, DER): docs/conventions.md.

Outputs in out_dir: ckpt.pt (model, optimizer, model_args, iter_num, config, classes), metrics.json,
train_log.jsonl (one line per step), summary.md.
"""
import json
import os
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

import features
from common import (KIND_NAMES, get_lr, mean_ap, targets_of, write_json, write_text, atomic_write, check_out_dir,
                    checkpoint_kind, duration, load_weights, remove_stale_temps)
from spatial_ast import (ModelArgs, SpatialAST, clean_state_dict, is_official, load_audiomae, load_official,
                         official_args)

# -----------------------------------------------------------------------------
# data: clips x IRs -> (dry, rir, labels, targets) numpy batches; convolution and features happen on the device

def ir_targets(rec):
    """(distance class, azimuth class, elevation class) of one IR record (docs/conventions.md)."""
    t = rec.get('targets') or targets_of(rec['sensor_position'], rec['source_position'])
    return t['distance_class'], t['azimuth'] % 360, (t['elevation'] + 90) % 180


def multi_hot(labels, classes):
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros(len(classes), np.float32)
    for label in labels:
        if label in index:  # labels the model does not know are ignored (real clips, other collections)
            y[index[label]] = 1.0
    return y


def fit_rir(rir, n):
    """(2, L) -> (2, n): crop or zero-pad (the official loader fixes IRs to 2 s)."""
    out = np.zeros((2, n), np.float32)
    m = min(n, rir.shape[1])
    out[:, :m] = rir[:, :m]
    return out


class ClipIRData:
    """Draws training batches. The random stream is a pure function of (seed, rank, iteration), so a resumed run
    (any world size) sees exactly the data the uninterrupted one would have."""

    def __init__(self, sources, rirs, classes, cache, sample_rate, clip_seconds, rir_seconds,
                 mixup_prob=0.5, mixup_alpha=10.0, two_source_prob=0.0, two_source_spatial=False, roll_mag=False):
        assert sources and rirs, 'no training sources or IRs'
        self.sources, self.rirs, self.classes, self.cache = sources, rirs, classes, cache
        self.sr, self.clip_seconds, self.rir_len = sample_rate, clip_seconds, int(rir_seconds * sample_rate)
        self.mixup_prob, self.mixup_alpha, self.two_source_prob = mixup_prob, mixup_alpha, two_source_prob
        self.two_source_spatial, self.roll_mag = two_source_spatial, roll_mag
        self.rooms = {}
        for i, r in enumerate(rirs):
            self.rooms.setdefault(r['fname'].split('/')[0], []).append(i)

    def clip(self, i, rng=None):
        """Clip i; with roll_mag (training) times a gain Beta(10, 10) + 0.5, as the official --roll_mag_aug. Its
        circular roll is not done: the official code draws the shift from len() of a (1, N) tensor, i.e. always 0."""
        x = self.cache.clip(self.sources[i]['path'], self.sr, self.clip_seconds)
        return x * np.float32(rng.beta(10.0, 10.0) + 0.5) if self.roll_mag and rng is not None else x

    def rir(self, j):
        return fit_rir(self.cache.rir(self.rirs[j]['path']), self.rir_len)

    def batch(self, batch_size, rng, picks=None):
        """picks: the batch's clip indices (an epoch sampler's), else uniform draws. Returns a dict of numpy arrays:
        dry (B, S, N), rir (B, S, 2, L), n_src (B,), labels (B, C), targets (B, 3),
        targets2 (B, 3; -1 without a second source), spatial (B,)."""
        n, C = int(self.sr * self.clip_seconds), len(self.classes)
        S = 2 if self.two_source_prob > 0 else 1
        dry = np.zeros((batch_size, S, n), np.float32)
        rir = np.zeros((batch_size, S, 2, self.rir_len), np.float32)
        n_src = np.ones(batch_size, np.int64)
        labels = np.zeros((batch_size, C), np.float32)
        targets = np.zeros((batch_size, 3), np.int64)
        targets2 = np.full((batch_size, 3), -1, np.int64)  # the second source's targets in a true 2-source mix
        spatial = np.ones(batch_size, np.float32)  # 0 where the spatial losses do not apply
        for b in range(batch_size):
            i = int(picks[b]) if picks is not None else rng.integers(len(self.sources))
            j = rng.integers(len(self.rirs))
            dry[b, 0], rir[b, 0], targets[b] = self.clip(i, rng), self.rir(j), ir_targets(self.rirs[j])
            labels[b] = multi_hot(self.sources[i]['labels'], self.classes)
            if S == 2 and rng.random() < self.two_source_prob:
                # a second source at its own position in the same room (as SpatialSoundQA mixtures): the class head
                # learns both labels, and each spatial head (with two_source_spatial) both positions (two-peak target)
                i2 = rng.integers(len(self.sources))
                room = self.rooms[self.rirs[j]['fname'].split('/')[0]]
                j2 = room[rng.integers(len(room))]
                dry[b, 1], rir[b, 1], n_src[b] = self.clip(i2), self.rir(j2), 2
                targets2[b] = ir_targets(self.rirs[j2])
                spatial[b] = float(self.two_source_spatial)
                labels[b] = np.maximum(labels[b], multi_hot(self.sources[i2]['labels'], self.classes))
            elif rng.random() < self.mixup_prob:
                # waveform mixup before spatialisation: both clips at the same position, soft labels
                i2, lam = rng.integers(len(self.sources)), rng.beta(self.mixup_alpha, self.mixup_alpha)
                dry[b, 0] = lam * dry[b, 0] + (1 - lam) * self.clip(i2, rng)
                labels[b] = lam * labels[b] + (1 - lam) * multi_hot(self.sources[i2]['labels'], self.classes)
        return dict(dry=dry, rir=rir, n_src=n_src, labels=labels, targets=targets, targets2=targets2, spatial=spatial)


class EpochSampler:
    """The clips of each training batch, epoch by epoch, as the official samplers: 'shuffle' = every training clip
    once an epoch in a seeded order (DistributedSampler, finetune-20k.sh); 'weighted' = epoch_len clips an epoch drawn
    in proportion to their weights without replacement (WeightedRandomSampler, finetune-2m.sh with its weights CSV).
    An epoch's order is a function of (seed, epoch), and a batch's place in it of (iteration, micro-step, rank), so a
    resumed run (same world size) draws what the uninterrupted one would."""

    def __init__(self, kind, n_clips, epoch_len, samples_per_iter, seed, weights=None):
        assert kind in ('shuffle', 'weighted'), f"sampler must be random|shuffle|weighted, got {kind!r}"
        self.kind, self.n, self.epoch_len, self.seed = kind, n_clips, epoch_len or n_clips, seed
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        assert kind == 'shuffle' or (self.weights is not None and (self.weights > 0).sum() >= self.epoch_len), \
            f'weighted sampler: needs a weight per clip, and at least epoch_len={self.epoch_len} clips weighing > 0'
        assert self.epoch_len <= n_clips, f'epoch_len {self.epoch_len} > {n_clips} clips (epochs draw without replacement)'
        self.iters_per_epoch = self.epoch_len // samples_per_iter
        assert self.iters_per_epoch >= 1, \
            f'epoch_len {self.epoch_len} is less than one iteration ({samples_per_iter} samples)'
        self.cached = (None, None)

    def order(self, epoch):
        if self.cached[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            order = torch.randperm(self.n, generator=g)[:self.epoch_len] if self.kind == 'shuffle' else \
                torch.multinomial(self.weights, self.epoch_len, replacement=False, generator=g)
            self.cached = (epoch, order.numpy())
        return self.cached[1]

    def picks(self, it, micro, accum, rank, world, batch_size):
        """Clip indices (batch_size,) of iteration it, micro-step micro, on rank."""
        epoch, step = divmod(it, self.iters_per_epoch)
        start = ((step * accum + micro) * world + rank) * batch_size
        return self.order(epoch)[start:start + batch_size]


def class_order(class_list, sources_path, train_sources):
    """The class head's order: class_list (a class CSV, row = index, or one name a line), else classes.txt beside the
    sources file (sources.py writes it from a class list), else the training labels sorted."""
    from sources import read_class_list
    beside = os.path.join(os.path.dirname(os.path.abspath(sources_path)), 'classes.txt')
    path = class_list or (beside if os.path.isfile(beside) else '')
    return read_class_list(path) if path else sorted({l for s in train_sources for l in s['labels']})


def fixed_eval_set(sources, rirs, n_items, seed):
    """n_items (source index, IR index) pairs: every eval clip once (cycled if n_items is larger), each with one
    seeded IR, so the eval set is the same in every run (the official eval draws IRs afresh)."""
    rng = np.random.default_rng([seed, 12345])
    order = rng.permutation(len(sources))
    return [(int(order[k % len(sources)]), int(rng.integers(len(rirs)))) for k in range(n_items)]


@torch.no_grad()
def band_stats(model, data, n_batches, batch_size, seed, device):
    """Mean and std (4, n_mels) of every input channel's mel bands (model.inputs: after mid_side) over n_batches
    training batches (their own random stream, so the training data stay what they were): band_norm's statistics."""
    rng = np.random.default_rng([seed, 4242])
    s = s2 = n = 0
    for _ in range(n_batches):
        b = data.batch(batch_size, rng)
        wav = spatialise(b['dry'], b['rir'], b['n_src'], device)
        f = model.inputs(features.binaural_features(wav)).double()  # (B, 4, T, M)
        s, s2, n = s + f.sum((0, 2)), s2 + (f * f).sum((0, 2)), n + f.shape[0] * f.shape[2]
    mean = s / n
    return mean.float(), (s2 / n - mean ** 2).clamp(min=1e-12).sqrt().float()


def spatialise(dry, rir, n_src, device):
    """numpy batch -> binaural waveforms (B, 2, N) on the device, in float32."""
    t = lambda a: torch.from_numpy(a).to(device, non_blocking=True)
    return features.convolve_mix(t(dry), t(rir), t(n_src))

# -----------------------------------------------------------------------------
# metrics (docs/conventions.md) and the two reference predictors

def great_circle_deg(az1, el1, az2, el2):
    a1, e1, a2, e2 = (np.radians(np.asarray(v, np.float64)) for v in (az1, el1, az2, el2))
    cos = np.sin(e1) * np.sin(e2) + np.cos(e1) * np.cos(e2) * np.cos(a1 - a2)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def score(cls_scores, labels, pred, gt):
    """pred, gt: (n, 3) int arrays of (distance class, azimuth deg, elevation class). Percentages, degrees."""
    err = great_circle_deg(pred[:, 1], pred[:, 2] - 90, gt[:, 1], gt[:, 2] - 90)
    m = mean_ap(cls_scores, labels)
    return {'mAP': None if m is None else 100 * m, 'ER20': float(100 * np.mean(err > 20)),
            'MAE_deg': float(np.mean(err)), 'DER': float(100 * np.mean(np.abs(pred[:, 0] - gt[:, 0]) > 1))}


def gcc_phat_itd(wav, sample_rate, max_itd=1e-3):
    """Interaural time difference (seconds, > 0 when the left ear leads) from the GCC-PHAT peak of (B, 2, N),
    refined between lags by a parabola through the peak and its neighbours."""
    n = 2 * wav.shape[-1]
    spec = torch.fft.rfft(wav.float(), n)
    cross = spec[:, 1] * spec[:, 0].conj()  # peak at lag k > 0 when the right ear hears it k samples later
    cc = torch.fft.irfft(cross / (cross.abs() + 1e-12), n)
    m = int(max_itd * sample_rate)
    cc = torch.cat([cc[:, -m - 1:], cc[:, :m + 2]], dim=1).double()  # lags -m-1 .. m+1
    k = cc[:, 1:-1].argmax(dim=1) + 1
    y0, y1, y2 = (cc.gather(1, (k + o)[:, None])[:, 0] for o in (-1, 0, 1))
    frac = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2).where((y0 - 2 * y1 + y2).abs() > 1e-12, torch.ones_like(y1))
    return ((k - m - 1).double() + frac.clamp(-0.5, 0.5)).cpu().numpy() / sample_rate


def itd_to_azimuth(itd, head_radius=0.0875, c=343.0, front=True):
    """Woodworth's spherical head, ITD = a/c (theta + sin theta), inverted for the lateral angle; the ITD cannot
    tell front from back, so the source is put in the `front` hemisphere. Returns azimuth degrees (0 right)."""
    grid = np.linspace(0, np.pi / 2, 2001)
    lateral = np.degrees(np.interp(np.abs(itd), head_radius / c * (grid + np.sin(grid)), grid)) * np.sign(itd)
    az = 90 + lateral if front else 270 - lateral  # lateral > 0 = left
    return np.round(az).astype(np.int64) % 360


class Priors:
    """What a predictor knows without training: the training IRs' typical elevation/distance/hemisphere and the
    training label frequencies."""

    def __init__(self, rirs, sources, classes):
        t = np.array([ir_targets(r) for r in rirs])
        self.distance, self.elevation = int(np.median(t[:, 0])), int(np.median(t[:, 2]))
        self.front = np.mean((t[:, 1] > 0) & (t[:, 1] < 180)) >= 0.5
        self.class_freq = np.mean([multi_hot(s['labels'], classes) for s in sources], axis=0) if sources else None


def baseline_predictions(wav, n_classes, priors, rng, sample_rate, head_radius):
    """(random, gcc) predictions for a waveform batch: each (class scores (B, C), (B, 3) dist/az/el classes)."""
    B = wav.shape[0]
    rand = (rng.random((B, n_classes)),
            np.stack([rng.integers(0, 21, B), rng.integers(0, 360, B), rng.integers(0, 180, B)], 1))
    az = itd_to_azimuth(gcc_phat_itd(wav, sample_rate), head_radius, front=priors.front)
    cls = np.tile(priors.class_freq, (B, 1)) + 1e-6 * rng.random((B, n_classes))  # prior + tiny tie-breaker
    gcc = (cls, np.stack([np.full(B, priors.distance), az, np.full(B, priors.elevation)], 1))
    return rand, gcc


@torch.no_grad()
def evaluate(model, items, sources, rirs, classes, cache, priors, device, ctx, sample_rate, clip_seconds,
             rir_seconds, batch_size=64, head_radius=0.0875, with_baselines=True, seed=0):
    """Scores the model (and, with_baselines, the random and GCC-PHAT predictors) on a fixed eval set.
    Returns {'model': {...}, 'random': {...}, 'gcc_phat': {...}, 'n': ...}; mAP only over known classes."""
    was_training = model.training
    model.eval()
    data = ClipIRData(sources, rirs, classes, cache, sample_rate, clip_seconds, rir_seconds)
    rng = np.random.default_rng([seed, 777])
    out = {k: ([], []) for k in ('model', 'random', 'gcc_phat')}
    gts, labels = [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        dry = np.stack([data.clip(i) for i, _ in chunk])[:, None]  # (B, 1, N)
        rir = np.stack([data.rir(j) for _, j in chunk])[:, None]  # (B, 1, 2, L)
        wav = spatialise(dry, rir, np.ones(len(chunk), np.int64), device)
        with ctx:
            c, d, a, e = model(features.binaural_features(wav))
        pred = torch.stack([d.argmax(-1), a.argmax(-1), e.argmax(-1)], 1).cpu().numpy()
        out['model'][0].append(torch.sigmoid(c.float()).cpu().numpy()), out['model'][1].append(pred)
        if with_baselines:
            for name, (s, p) in zip(('random', 'gcc_phat'), baseline_predictions(wav, len(classes), priors, rng,
                                                                                 sample_rate, head_radius)):
                out[name][0].append(s), out[name][1].append(p)
        gts.append(np.array([ir_targets(rirs[j]) for _, j in chunk]))
        labels.append(np.stack([multi_hot(sources[i]['labels'], classes) for i, _ in chunk]))
    gt, y = np.concatenate(gts), np.concatenate(labels)
    model.train(was_training)
    res = {name: score(np.concatenate(s), y, np.concatenate(p), gt) for name, (s, p) in out.items() if s}
    res['n'] = len(items)
    return res


def metrics_table(res):
    fmt = lambda v: 'n/a' if v is None else f'{v:.2f}'
    rows = ['| predictor | mAP % (up) | ER20 % (down) | MAE deg (down) | DER % (down) |', '|---|---|---|---|---|']
    for name in ('model', 'random', 'gcc_phat'):
        if name in res:
            r = res[name]
            rows.append(f"| {name} | {fmt(r['mAP'])} | {fmt(r['ER20'])} | {fmt(r['MAE_deg'])} | {fmt(r['DER'])} |")
    return '\n'.join(rows)

# -----------------------------------------------------------------------------
# optimisation

def param_groups(model, weight_decay, layer_decay):
    """AdamW groups with BEiT layer-wise lr decay (patch embed = layer 0, block i = i + 1, everything newer = top,
    including cls_tokens as in the official name rule) and weight decay on weights of 2+ dims only."""
    top = model.args.depth + 1
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = 0 if name.startswith('patch_embed') else int(name.split('.')[1]) + 1 if name.startswith('blocks.') else top
        decay = p.dim() >= 2
        g = groups.setdefault((layer, decay), {'params': [], 'weight_decay': weight_decay if decay else 0.0,
                                               'lr_scale': layer_decay ** (top - layer)})
        g['params'].append(p)
    return list(groups.values())


def soft_targets(idx, n, sigma, circular):
    """(B,) class indices -> (B, n) Gaussian target distributions sigma bins wide (wrapping round for azimuth)."""
    d = torch.arange(n, device=idx.device)[None, :] - idx[:, None]  # (B, n)
    if circular:
        d = (d + n // 2) % n - n // 2
    w = torch.exp(-0.5 * (d.float() / sigma) ** 2)
    return w / w.sum(dim=1, keepdim=True)


def encoder_loss(logits, labels, targets, spatial, w_class, w_distance, w_direction, sigma_deg=0.0, sigma_dist=0.0,
                 targets2=None):
    """w_class * BCE(class) + w_distance * CE(distance) + w_direction * (CE(azimuth) + CE(elevation)).
    sigma_* > 0 replaces the one-hot spatial targets by Gaussians that wide (degrees / distance bins): neighbouring
    bins share the gradient, which a short run needs; 0 = the official hard targets. targets2 (B, 3), -1 where there
    is no second source: rows with one get the mean of the two target distributions (a head cannot name one position
    of two sources). spatial (B,) weighs each row's spatial losses. Returns (total, parts)."""
    c, d, a, e = (x.float() for x in logits)
    bce = F.binary_cross_entropy_with_logits(c, labels)

    def goal_of(x, t, sigma, circular):  # (B,) class indices -> (B, n) target distributions
        return F.one_hot(t.clamp(min=0), x.shape[1]).float() if sigma <= 0 else soft_targets(t, x.shape[1], sigma, circular)

    def ce(x, k, sigma, circular=False):
        goal = goal_of(x, targets[:, k], sigma, circular)
        if targets2 is not None:
            two = (targets2[:, k] >= 0)[:, None]
            goal = torch.where(two, 0.5 * (goal + goal_of(x, targets2[:, k], sigma, circular)), goal)
        return (F.cross_entropy(x, goal, reduction='none') * spatial).sum() / spatial.sum().clamp(min=1)

    dist = ce(d, 0, sigma_dist)
    az, el = ce(a, 1, sigma_deg, circular=True), ce(e, 2, sigma_deg)
    total = w_class * bce + w_distance * dist + w_direction * (az + el)
    return total, {'bce': bce.item(), 'dist': dist.item(), 'az': az.item(), 'el': el.item()}

# -----------------------------------------------------------------------------
# config: defaults are the official Spatial-AST recipe; config/*.py files and --key=value override
out_dir = 'out/encoder'        # where ckpt.pt, metrics.json, train_log.jsonl, summary.md go
seed = 1337                    # any int
device = 'auto'                # 'auto' (cuda if available) | 'cpu' | 'cuda' | 'cuda:N'
dtype = 'auto'                 # 'auto' (bfloat16 on cuda, float32 on cpu) | 'float32' | 'bfloat16' | 'float16'
compile = False                # torch.compile the model (GPU; needs a compiler toolchain)
backend = 'auto'               # DDP backend: 'auto' (nccl on cuda, gloo on cpu) | 'nccl' | 'gloo'
sources = 'out/demo/sources/sources.jsonl'  # sources JSONL (docs/conventions.md); train/eval by its 'split'
class_list = ''                # the head's class order: a class CSV (class_labels_indices_subset.csv: row = index)
                               # or one name a line; '' = classes.txt beside `sources` if there, else sorted labels
render_dir = 'out/demo/rirs'   # folder with {train,eval}_reverberation.jsonl and binaural/
init_from = 'scratch'          # 'scratch' | 'resume' (out_dir/ckpt.pt) | path: our ckpt.pt, official finetuned.pth, AudioMAE .pth
eval_only = False              # True: evaluate and exit
overwrite = False              # True: a fresh run may replace the run already in out_dir (else that is refused)
eval_sources = ''              # '' | another sources JSONL scored (all its records) in eval rooms -> metrics_real.json
eval_items = 512               # size of the fixed eval set (eval clips cycled, one seeded IR each)
eval_batch_size = 64           # items per eval batch
eval_interval = 500            # iterations between evaluations (and checkpoints)
log_interval = 10              # iterations between progress lines
always_save_checkpoint = True  # False: save only when the eval MAE improves
head_radius = 0.0875           # metres; the GCC-PHAT baseline's Woodworth head
# data
sample_rate = 32000            # Hz
clip_seconds = 10.0            # seconds per example (official 10.0)
rir_seconds = 2.0              # IRs cropped / zero-padded to this (official 2.0)
clip_pad = 'loop'              # a clip shorter than clip_seconds: 'loop' | 'zero' (official: zeros)
roll_mag = False               # each training clip times a gain Beta(10, 10) + 0.5 (official --roll_mag_aug)
sampler = 'random'             # 'random' (uniform draws) | 'shuffle' (every clip once an epoch, official 20k)
                               # | 'weighted' (epoch_len clips an epoch by the sources' weights, official 2M)
epoch_len = 0                  # samples an epoch for the samplers and `epochs`; 0 = the number of training clips
epochs = 0                     # > 0: max_iters = epochs x iterations per epoch (and warmup_iters from warmup_epochs)
warmup_epochs = 0
mixup_prob = 0.5               # 0..1, waveform mixup, same IR, soft labels (official 0.5)
mixup_alpha = 10.0             # Beta(alpha, alpha) mixing weight (official 10.0)
two_source_prob = 0.0          # 0..1, two sources at their own IRs, both labels (0.0 = official: none)
two_source_spatial = False     # such mixtures also train the spatial heads, two-peak targets (False = official)
batch_size = 64                # per process, per micro-step (official: 64 on each of 4 GPUs)
gradient_accumulation_steps = 1  # x processes x batch_size = samples per step (official 256)
# model (ModelArgs fields, their defaults the official ViT-B; n_classes comes from the data)
n_frames = 1024; n_mels = 128; patch = 16; patch_f = 0; dim = 768; depth = 12; n_heads = 12; mlp_ratio = 4.0
drop_path = 0.1; mask_t_prob = 0.25; mask_f_prob = 0.25; freq_mask = 48; time_mask = 192
spec_masks = 'batch'           # SpecAugment: 'batch' (one mask for the batch, the official torchaudio call) | 'item'
ipd_scale = 1.0                # x the mel IPD channels before the stem (1.0 = official)
stem_channels = 1              # conv stem output channels (1 = official)
band_norm = ''                 # '' (official) | 'mel' | 'all': standardise each mel band of the log-mels | all 4 channels
band_norm_batches = 20         # training batches those statistics are taken from (stored in the checkpoint)
mid_side = False               # the log-mels as (L + R) / 2 and L - R, each on its own scale (False = official)
# loss: w_class * BCE + w_distance * CE(distance) + w_direction * (CE(azimuth) + CE(elevation))
w_class = 1250.0               # official 1250 (BCE is averaged over its 355 classes)
w_distance = 1.0               # official 1.0
w_direction = 2.0              # official 2.0
sigma_deg = 0.0                # 0.0 = one-hot azimuth/elevation targets (official) | > 0: Gaussian targets, degrees
sigma_dist = 0.0               # 0.0 = one-hot distance targets (official) | > 0: Gaussian targets, in 0.5 m bins
# optimiser
learning_rate = 1e-3           # peak lr (official: blr 1e-3 x batch 256 / 256)
min_lr = 1e-6                  # end of the cosine decay (official 1e-6)
weight_decay = 5e-4            # AdamW, on weights of 2+ dims (official 5e-4)
beta1 = 0.9                    # AdamW defaults (official)
beta2 = 0.999
layer_decay = 0.75             # lr x layer_decay ** (depth + 1 - layer) (official 0.75)
grad_clip = 0.0                # 0.0 = off (official: off)
warmup_iters = 7420            # official: 10 epochs of 190k samples at batch 256
max_iters = 74200              # official: 100 such epochs
lr_decay_iters = 0             # 0 = max_iters
# -----------------------------------------------------------------------------

if __name__ == '__main__':
    exec(open('configurator.py').read())
    config = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))}

    # --- derived settings, DDP, device ---
    ddp = int(os.environ.get('RANK', -1)) != -1
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if ddp:
        rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
        if device.startswith('cuda'):
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=('nccl' if device.startswith('cuda') else 'gloo') if backend == 'auto' else backend)
        assert gradient_accumulation_steps % world == 0 or gradient_accumulation_steps == 1
    else:
        rank, local_rank, world = 0, 0, 1
    master = rank == 0
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    if dtype == 'auto':
        dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if device_type == 'cpu' or dtype == 'float32' else torch.autocast(device_type, dtype=ptdtype)
    lr_decay_iters = lr_decay_iters or max_iters
    samples_per_iter = batch_size * gradient_accumulation_steps * world
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts them)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    say = print if master else (lambda *a, **k: None)
    # nothing is written into out_dir until the inputs are read and checked (a failed run leaves it as it was)
    check_out_dir(out_dir, init_from, overwrite or eval_only, 'train_encoder')
    say(f'device {device} ({dtype}), world {world}, {samples_per_iter} samples/iter, {max_iters} iters')

    # --- the checkpoint to start from (its kind told from its keys), then the data ---
    ckpt = None
    resume_path = os.path.join(out_dir, 'ckpt.pt') if init_from == 'resume' else init_from
    if init_from != 'scratch':
        ckpt = load_weights(resume_path, '--init_from')
        kind = checkpoint_kind(ckpt)
        if kind not in ('encoder', 'spatial_ast', 'audiomae'):
            raise SystemExit(f"train_encoder: --init_from={resume_path} is {KIND_NAMES[kind]}; expected 'resume', a "
                             f"train_encoder.py checkpoint, the official Spatial-AST finetuned.pth or AudioMAE weights")
        is_ours = kind == 'encoder'
    for path in [sources, eval_sources] + [os.path.join(render_dir, f'{s}_reverberation.json') for s in ('train', 'eval')]:
        if path and not (os.path.isfile(path) or os.path.isfile(path + 'l')):
            raise SystemExit(f"train_encoder: no such file {path}; set --sources= (sources.py) and --render_dir= "
                             f"(render.py) to where they are")
    assert clip_pad in ('loop', 'zero'), f"clip_pad must be 'loop' or 'zero', got {clip_pad!r}"
    cache = features.AudioCache(clip_pad)
    all_sources = features.read_sources(sources)
    train_sources = [s for s in all_sources if s.get('split', 'train') == 'train']
    train_rirs, eval_rirs = features.read_rirs(render_dir, 'train'), features.read_rirs(render_dir, 'eval')
    classes = ckpt['classes'] if ckpt is not None and is_ours else class_order(class_list, sources, train_sources)
    if eval_sources:
        eval_set_sources, metrics_name = features.read_sources(eval_sources), 'metrics_real.json'
    else:
        eval_set_sources, metrics_name = [s for s in all_sources if s.get('split') == 'eval'], 'metrics.json'
    eval_items_list = fixed_eval_set(eval_set_sources, eval_rirs, eval_items, seed)
    priors = Priors(train_rirs, train_sources, classes)
    say(f'{len(train_sources)} train clips, {len(train_rirs)} train IRs, {len(classes)} classes; '
        f'eval: {len(eval_set_sources)} clips x {len(eval_rirs)} IRs -> {len(eval_items_list)} fixed items')
    # the training clips: with sampler='random' each process draws from its own share (every world-th clip, as a
    # DistributedSampler), so DDP ranks see disjoint data; the epoch samplers share one order out by rank themselves
    assert len(train_sources) >= world, f'{len(train_sources)} training clips cannot be shared by {world} processes'
    data = ClipIRData(train_sources[rank::world] if sampler == 'random' else train_sources, train_rirs, classes, cache,
                      sample_rate, clip_seconds, rir_seconds, mixup_prob, mixup_alpha, two_source_prob,
                      two_source_spatial, roll_mag)
    epoch_sampler = None
    if sampler != 'random':
        weights = [s.get('weight') for s in train_sources] if sampler == 'weighted' else None
        if weights is not None and None in weights:
            raise SystemExit(f"sampler='weighted': {sources} has train clips without a 'weight' "
                             f"(sources.py --weight_csv= writes them)")
        epoch_sampler = EpochSampler(sampler, len(train_sources), epoch_len, samples_per_iter, seed, weights)
    if epochs:  # the official recipes count in epochs of epoch_len samples
        per_epoch = (epoch_len or len(train_sources)) // samples_per_iter
        assert per_epoch >= 1, f'an epoch ({epoch_len or len(train_sources)} samples) is less than one iteration'
        max_iters, warmup_iters = epochs * per_epoch, warmup_epochs * per_epoch
        lr_decay_iters, eval_interval = max_iters, eval_interval or per_epoch
        say(f'{epochs} epochs x {per_epoch} iterations = {max_iters} iterations, {warmup_iters} of warmup')
    assert eval_interval > 0, 'eval_interval=0 (every epoch) needs epochs > 0'

    # --- model ---
    if ckpt is not None and is_ours:
        model_args = ModelArgs(**ckpt['model_args'])
    elif ckpt is not None and is_official(clean_state_dict(ckpt)):  # finetuned.pth: sizes from its shapes
        model_args = official_args(clean_state_dict(ckpt))
        if model_args.n_classes != len(classes):
            raise SystemExit(f'{init_from}: its class head has {model_args.n_classes} rows, the class order has '
                             f'{len(classes)}: give --class_list=<class_labels_indices_subset.csv> (row = index)')
        for k in ('drop_path', 'mask_t_prob', 'mask_f_prob', 'freq_mask', 'time_mask', 'spec_masks'):
            setattr(model_args, k, globals()[k])  # training settings stay this run's
    else:
        model_args = ModelArgs(n_frames=n_frames, n_mels=n_mels, patch=patch, patch_f=patch_f, dim=dim, depth=depth,
                               n_heads=n_heads, mlp_ratio=mlp_ratio, n_classes=len(classes), drop_path=drop_path,
                               mask_t_prob=mask_t_prob, mask_f_prob=mask_f_prob, freq_mask=freq_mask, time_mask=time_mask,
                               spec_masks=spec_masks, ipd_scale=ipd_scale, stem_channels=stem_channels, band_norm=band_norm,
                               mid_side=mid_side)
    model = SpatialAST(model_args)
    iter_num, best_mae = 0, float('inf')
    if ckpt is not None and is_ours:
        missing, unexpected = model.load_state_dict(clean_state_dict(ckpt['model']), strict=False)
        if unexpected or missing:
            raise ValueError(f'{resume_path}: weights do not fit the model: missing {missing}, unexpected {unexpected}')
        if init_from == 'resume':
            iter_num, best_mae = ckpt['iter_num'], ckpt.get('best_mae', best_mae)
    elif ckpt is not None:  # an outside checkpoint: the official model loads whole, AudioMAE partially
        sd = clean_state_dict(ckpt)
        if is_official(sd):
            say('official Spatial-AST weights; its front end matches ours and is left out:',
                load_official(model, sd, init_from))
        else:
            report = load_audiomae(model, sd, verbose=master)
    model.to(device)
    assert model_args.band_norm in ('', 'mel', 'all'), f"band_norm must be '', 'mel' or 'all', got {band_norm!r}"
    if model_args.band_norm and not (ckpt is not None and is_ours):  # ours carry their statistics
        model.band_mean, model.band_std = band_stats(model, data, band_norm_batches, batch_size, seed, device)
        say(f'band_norm: statistics of {band_norm_batches} x {batch_size} training examples')
    n_params = sum(p.numel() for p in model.parameters())
    say(f'Spatial-AST {n_params / 1e6:.2f}M parameters, {model.grid_t}x{model.grid_f} patches')

    optimizer = torch.optim.AdamW(param_groups(model, weight_decay, layer_decay), lr=learning_rate,
                                  betas=(beta1, beta2), **({'fused': True} if device_type == 'cuda' else {}))
    if init_from == 'resume':
        optimizer.load_state_dict(ckpt['optimizer'])
    ckpt = None  # free memory
    scaler = torch.amp.GradScaler(enabled=(dtype == 'float16'))
    raw_model = model
    if compile:
        model = torch.compile(model)
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device_type == 'cuda' else None)

    baselines = {}  # the random and GCC-PHAT rows do not change during training: computed once

    def run_eval():
        res = evaluate(raw_model, eval_items_list, eval_set_sources, eval_rirs, classes, cache, priors, device, ctx,
                       sample_rate, clip_seconds, rir_seconds, eval_batch_size, head_radius, not baselines, seed)
        baselines.update({k: res[k] for k in ('random', 'gcc_phat') if k in res})
        res.update(baselines)
        res.update(iter=iter_num, classes=len(classes), eval_sources=eval_sources or sources)
        res.update({k: res['model'][k] for k in ('mAP', 'ER20', 'MAE_deg', 'DER')})  # top-level keys (docs/conventions.md)
        write_json(os.path.join(out_dir, metrics_name), res)
        say(f'eval at iter {iter_num} on {res["n"]} items:\n' + metrics_table(res))
        return res

    def save(res):
        ckpt = {'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(), 'model_args': vars(model_args).copy(),
                'iter_num': iter_num, 'best_mae': best_mae, 'config': config, 'classes': classes, 'metrics': res}
        atomic_write(os.path.join(out_dir, 'ckpt.pt'), lambda f: torch.save(ckpt, f), mode='wb')

    if master:
        os.makedirs(out_dir, exist_ok=True)
        remove_stale_temps(out_dir, say)
    if eval_only:
        if master:
            run_eval()
        raise SystemExit(0)

    # --- training loop ---
    t_start, iter_start = time.time(), iter_num
    t0, res = time.time(), None
    log_path = os.path.join(out_dir, 'train_log.jsonl')
    if master and os.path.exists(log_path):  # resume: the rows past the checkpoint are redone; fresh: a new log
        rows = open(log_path).read().splitlines(keepends=True) if init_from == 'resume' else []
        kept = [r for r in rows if r.strip() and json.loads(r)['iter'] < iter_num]
        if len(kept) < len(rows) or init_from != 'resume':
            say(f"train_log.jsonl: {len(rows) - len(kept)} rows past the checkpoint (iter {iter_num}) dropped"
                if init_from == 'resume' else "train_log.jsonl: an earlier run's log in out_dir replaced")
        atomic_write(log_path, lambda f: f.writelines(kept))
    while True:
        lr = get_lr(iter_num, learning_rate, min_lr, warmup_iters, lr_decay_iters)
        for g in optimizer.param_groups:
            g['lr'] = lr * g['lr_scale']
        if (iter_num % eval_interval == 0 or iter_num == max_iters) and master:
            res = run_eval()
            if res['MAE_deg'] < best_mae or always_save_checkpoint:
                best_mae = min(best_mae, res['MAE_deg'])
                if iter_num > 0:
                    save(res)
        if iter_num >= max_iters:
            break
        # randomness of this step (data, mixup, masking, SpecAugment, drop-path) = f(seed, rank, iter): exact resume
        rng = np.random.default_rng([seed, rank, iter_num])
        torch.manual_seed(int(rng.integers(2 ** 62)))
        parts = {}
        for micro in range(gradient_accumulation_steps):
            picks = epoch_sampler.picks(iter_num, micro, gradient_accumulation_steps, rank, world, batch_size) \
                if epoch_sampler is not None else None
            b = data.batch(batch_size, rng, picks)
            with torch.no_grad():
                feats = features.binaural_features(spatialise(b['dry'], b['rir'], b['n_src'], device))
            if ddp:  # all-reduce gradients on the last micro-step only
                model.require_backward_grad_sync = micro == gradient_accumulation_steps - 1
            with ctx:
                out = model(feats)
            b = {k: torch.from_numpy(v).to(device) for k, v in b.items() if k not in ('dry', 'rir')}
            loss, part = encoder_loss(out, b['labels'], b['targets'], b['spatial'], w_class, w_distance,
                                      w_direction, sigma_deg, sigma_dist, b['targets2'])
            scaler.scale(loss / gradient_accumulation_steps).backward()
            for k, v in part.items():
                parts[k] = parts.get(k, 0.0) + v / gradient_accumulation_steps
            parts['loss'] = parts.get('loss', 0.0) + loss.item() / gradient_accumulation_steps
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        if master:
            with open(log_path, 'a') as f:
                f.write(json.dumps({'iter': iter_num, 'lr': lr, **parts}) + '\n')
            if iter_num % log_interval == 0:
                eta = (max_iters - iter_num - 1) * (t1 - t_start) / (iter_num + 1 - iter_start)
                print(f"iter {iter_num}/{max_iters}: loss {parts['loss']:.4f} (bce {parts['bce']:.4f} dist "
                      f"{parts['dist']:.3f} az {parts['az']:.3f} el {parts['el']:.3f}), lr {lr:.2e}, "
                      f"{dt * 1000:.0f} ms/iter, {samples_per_iter / dt:.1f} samples/s, ETA {duration(eta)}", flush=True)
        iter_num += 1

    # --- wrap up ---
    if ddp:  # a cheap check that the replicas stayed identical (the DDP test reads these lines)
        checksum = sum(p.detach().double().sum().item() for p in raw_model.parameters())
        print(f'rank {rank} parameter checksum {checksum:.10e}', flush=True)
        torch.distributed.destroy_process_group()
    if master:
        seconds = time.time() - t_start
        summary = (f'# Spatial-AST encoder\n\n{iter_num} iterations x {samples_per_iter} samples in {seconds:.0f} s '
                   f'({iter_num * samples_per_iter / max(seconds, 1e-9):.1f} samples/s incl. evals) on {device} x {world}; '
                   f'{n_params / 1e6:.2f}M parameters {vars(model_args)}; {len(classes)} classes; '
                   f'{len(train_sources)} train clips x {len(train_rirs)} train IRs.\n\n'
                   f'Fixed eval set: {len(eval_items_list)} items ({eval_sources or sources}, eval IRs).\n\n'
                   + (metrics_table(res) if res else '') + '\n\nFiles: ckpt.pt, metrics.json, train_log.jsonl.\n')
        write_text(os.path.join(out_dir, 'summary.md'), summary)
