"""
Training throughput of Spatial-AST with the data path included (host batch -> device, IR convolution, features,
forward, backward, AdamW step), against a reference measured in the same run: the same step on precomputed
features (model only), so the printed ratio is the share of time the data path costs.

    CPU, the demo's tiny config:   python bench/bench_encoder.py
    one GPU, paper size, bf16:     python bench/bench_encoder.py --device=cuda --size=paper --compile=True
    (options: --batch_size=N --steps=N --clip_seconds=S --peak_tflops=989 for MFU; H100 SXM dense bf16 = 989)

MFU counts the transformer's matmul FLOPs (SpatialAST.flops_per_sample, 3x forward for training) per second
over the peak; the goal on one H100 is >= 35 % with compile.
"""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import features
from spatial_ast import ModelArgs, SpatialAST
from train_encoder import encoder_loss, param_groups

# --- config ---
device = 'cpu'          # 'cpu' | 'cuda'
size = 'tiny'           # 'tiny' (config/demo_encoder.py model) | 'paper' (ViT-B, 1024 frames, 10 s clips)
batch_size = 0          # 0 = 16 (tiny) / 64 (paper)
steps = 0               # timed steps; 0 = 6 (cpu) / 20 (cuda)
clip_seconds = 0.0      # 0 = 2.0 (tiny) / 10.0 (paper)
compile = False         # torch.compile the model
peak_tflops = 989.0     # accelerator peak for MFU (H100 SXM bf16 dense)
seed = 0
# ---
for arg in sys.argv[1:]:  # tiny --key=value parser (configurator.py needs the repo root as cwd)
    key, value = arg.lstrip('-').split('=', 1)
    assert key in globals(), f'unknown option {key}'
    globals()[key] = type(globals()[key])(value == 'True' if isinstance(globals()[key], bool) else value)

tiny = size == 'tiny'
batch_size = batch_size or (16 if tiny else 64)
steps = steps or (6 if device == 'cpu' else 20)
clip_seconds = clip_seconds or (2.0 if tiny else 10.0)
args = (ModelArgs(n_frames=112, dim=128, depth=6, n_heads=4, n_classes=25, drop_path=0.0, mask_t_prob=0.0,
                   mask_f_prob=0.0, time_mask=20, freq_mask=24, ipd_scale=100.0, stem_channels=4,
                   mid_side=True)
        if tiny else ModelArgs())
torch.manual_seed(seed)
model = SpatialAST(args).to(device)
opt = torch.optim.AdamW(param_groups(model, 5e-4, 0.75), lr=1e-4, **({'fused': True} if device == 'cuda' else {}))
step_model = torch.compile(model) if compile else model
ctx = torch.autocast('cuda', dtype=torch.bfloat16) if device == 'cuda' else torch.autocast('cpu', enabled=False)

# a pool of dry clips and IRs in host memory, drawn from at random as the trainer does
rng = np.random.default_rng(seed)
N, L = int(32000 * clip_seconds), 64000 if not tiny else 16000  # IRs: 2 s (paper) / 0.5 s (demo)
pool_dry = rng.standard_normal((64, N)).astype(np.float32) * 0.2
pool_rir = (rng.standard_normal((64, 2, L)) * np.exp(-np.arange(L) / 3000)).astype(np.float32)
C = args.n_classes
labels = torch.rand(batch_size, C, device=device).round()
targets = torch.stack([torch.randint(0, n, (batch_size,), device=device) for n in (21, 360, 180)], 1)
ones = torch.ones(batch_size, device=device)


def host_batch():
    i, j = rng.integers(64, size=batch_size), rng.integers(64, size=batch_size)
    return pool_dry[i][:, None], pool_rir[j][:, None]


def features_of(dry, rir):
    t = lambda a: torch.from_numpy(a).pin_memory().to(device, non_blocking=True) if device == 'cuda' else torch.from_numpy(a)
    with torch.no_grad():
        wav = features.convolve_mix(t(dry), t(rir), torch.ones(batch_size, dtype=torch.long, device=device))
        return features.binaural_features(wav)


def train_step(feats):
    with ctx:
        logits = step_model(feats)
    loss, _ = encoder_loss(logits, labels, targets, ones, 1250.0, 1.0, 2.0)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync():
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn, n):
    for _ in range(2):  # warm-up (and compilation)
        fn()
    sync()
    t0 = time.time()
    for _ in range(n):
        fn()
    sync()
    return n * batch_size / (time.time() - t0)


fixed = features_of(*host_batch())
full = timed(lambda: train_step(features_of(*host_batch())), steps)
model_only = timed(lambda: train_step(fixed), steps)
flops = model.flops_per_sample(training=True)
print(f'Spatial-AST {size}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, batch {batch_size}, '
      f'{clip_seconds:g} s clips, device {device}{" (compiled)" if compile else ""}, torch threads {torch.get_num_threads()}')
print(f'training with data path : {full:8.1f} samples/s')
print(f'model only (reference)  : {model_only:8.1f} samples/s')
print(f'ratio full / model-only : {full / model_only:.2f}  (data path = {100 * (1 - full / model_only):.0f} % of step time)')
print(f'model FLOPs {flops / 1e9:.2f} GFLOP/sample (train) -> {full * flops / 1e12:.2f} TFLOP/s achieved')
if device == 'cuda':
    print(f'MFU {100 * full * flops / (peak_tflops * 1e12):.1f} % of {peak_tflops:g} TFLOP/s (goal >= 35 % on one H100)')
