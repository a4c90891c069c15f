"""
Spatial-AST: the binaural encoder of BAT (what BAT hears with), written from what the official model does
(normalisation, conv stem, SpecAugment, ViT with 3 [CLS] tokens and 4 heads). It takes the features of
features.binaural_features, (B, 4, T, 128) = [log-mel L, log-mel R, mel cos IPD, mel sin IPD], and gives
  forward(feats) -> (class, distance, azimuth, elevation) logits   (heads on 3 [CLS] tokens)
  tokens(feats)  -> (B, 3 + N, dim) full token sequence, no final norm   (what BAT's projector reads)
Class indices of the heads follow docs/conventions.md (distance, azimuth, elevation).

Parameter names and shapes follow the official model, so its `finetuned.pth` (load_official) and an AudioMAE
ViT-B checkpoint (load_audiomae, partial) load into SpatialAST(ModelArgs()). load_checkpoint(path, device) takes
our train_encoder.py checkpoints and the official finetuned.pth alike (its sizes read off the shapes).

No command line: this file is imported by train_encoder.py, train_bat.py, eval.py and the tests, e.g.
    from spatial_ast import ModelArgs, SpatialAST, load_checkpoint
    model = SpatialAST(ModelArgs(dim=192, depth=4, n_heads=3, n_frames=208, n_classes=10))
"""
import math
from dataclasses import dataclass, asdict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import KIND_NAMES, checkpoint_kind, load_weights


@dataclass
class ModelArgs:
    n_frames: int = 1024      # time frames after the bicubic resize (10 s = 1001 frames -> 1024)
    n_mels: int = 128         # mel bins of the features
    patch: int = 16           # square patches, stride = patch (no overlap): 64 x 8 = 512 tokens at paper size
    patch_f: int = 0          # mel bins a patch spans (0 = patch, square as official; n_mels = one token per time step)
    dim: int = 768            # ViT-B
    depth: int = 12
    n_heads: int = 12
    mlp_ratio: float = 4.0
    n_classes: int = 355      # AudioSet subset of the paper; the data's label set otherwise
    n_distance: int = 21      # 0..10 m in 0.5 m bins
    n_azimuth: int = 360      # 1-degree bins
    n_elevation: int = 180    # 1-degree bins, class = (el + 90) % 180
    drop_path: float = 0.1    # stochastic depth, rising linearly to this over the blocks
    mask_t_prob: float = 0.25  # training-only 2-D patch masking: share of time rows removed
    mask_f_prob: float = 0.25  # ... and of frequency columns removed
    freq_mask: int = 48       # training-only SpecAugment: widest frequency mask (bins)
    time_mask: int = 192      # ... widest time mask (frames, after the resize)
    spec_masks: str = 'batch'  # 'batch': one mask pair for the whole batch (the official torchaudio call) | 'item'
    norm_eps: float = 1e-6
    ipd_scale: float = 1.0    # multiplies the mel cos/sin IPD channels before the stem (1.0 = official; see front())
    stem_channels: int = 1    # channels out of the conv stem = into the patch embedding (1 = official; see front())
    band_norm: str = ''       # '' (official) | 'mel': standardise every mel band of the two log-mels | 'all': of all 4
                              # channels, with training-data statistics (buffers band_mean, band_std; see front())
    mid_side: bool = False    # the log-mels enter as (L + R) / 2 and L - R, each normalised on its own (see inputs())

N_CLS = 3  # [CLS] tokens: 0 distance, 1 direction (azimuth + elevation), 2 class

# -----------------------------------------------------------------------------
# pieces

def sincos_pos_embed(dim, grid_t, grid_f):
    """Fixed 2-D sin-cos table (1, 1 + grid_t * grid_f, dim), row 0 zero (AudioMAE's cls slot, unused here).
    Patch k = t * grid_f + f. First half of the channels encodes the frequency column, second half the time row
    (the AudioMAE/MAE layout, so a loaded pos_embed means the same thing as ours)."""
    assert dim % 4 == 0, 'dim must be a multiple of 4 for the 2-D sin-cos embedding'
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))  # (D/4,)
    t, f = np.meshgrid(np.arange(grid_t), np.arange(grid_f), indexing='ij')  # (grid_t, grid_f) each

    def embed_1d(pos):
        out = np.outer(pos.reshape(-1), omega)  # (M, D/4)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D/2)

    table = np.concatenate([embed_1d(f), embed_1d(t)], axis=1)  # (M, D)
    table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return torch.tensor(table, dtype=torch.float32).unsqueeze(0)


def spec_augment(x, freq_mask, time_mask, shared=False):
    """SpecAugment on (B, C, T, F): one frequency band and one time span zeroed per example, widths uniform in
    [0, freq_mask) and [0, time_mask). shared=True draws one band and one span for the whole batch, the way the
    official model's torchaudio FrequencyMasking(48) / TimeMasking(192) do (iid_masks=False): width w = U * widest,
    start = U * (size - w), both rounded down."""
    B, _, T, Fq = x.shape
    n = 1 if shared else B

    def band(size, widest):
        w = torch.rand(n, 1, device=x.device) * min(widest, size)
        if shared:
            start = (torch.rand(n, 1, device=x.device) * (size - w)).long()
            width = w.long()
        else:
            width = w.long()
            start = (torch.rand(n, 1, device=x.device) * (size - width + 1)).long().clamp(max=size - 1)
        idx = torch.arange(size, device=x.device).unsqueeze(0)  # (1, size)
        return (idx >= start) & (idx < start + width)  # (B or 1, size) True = masked

    keep_t = ~band(T, time_mask)[:, None, :, None]  # (B or 1, 1, T, 1)
    keep_f = ~band(Fq, freq_mask)[:, None, None, :]  # (B or 1, 1, 1, F)
    return x * (keep_t & keep_f).to(x.dtype)


def random_masking_2d(x, grid_t, grid_f, mask_t_prob, mask_f_prob):
    """AudioMAE-style structured masking: drop whole time rows and frequency columns of the patch grid.
    x (B, grid_t * grid_f, D) -> (B, keep_t * keep_f, D); the dropped tokens are removed, not zeroed."""
    B, N, D = x.shape
    # at least one row and column stays (a full-band patch grid has a single column)
    keep_t, keep_f = max(1, int(grid_t * (1 - mask_t_prob))), max(1, int(grid_f * (1 - mask_f_prob)))
    rows = torch.rand(B, grid_t, device=x.device).argsort(dim=1)[:, :keep_t].sort(dim=1).values  # (B, keep_t)
    cols = torch.rand(B, grid_f, device=x.device).argsort(dim=1)[:, :keep_f].sort(dim=1).values  # (B, keep_f)
    x = x.view(B, grid_t, grid_f, D)
    x = torch.gather(x, 1, rows[:, :, None, None].expand(B, keep_t, grid_f, D))  # (B, keep_t, grid_f, D)
    x = torch.gather(x, 2, cols[:, None, :, None].expand(B, keep_t, keep_f, D))  # (B, keep_t, keep_f, D)
    return x.reshape(B, keep_t * keep_f, D)


def drop_path(x, p, training):
    """Stochastic depth: drop the whole residual branch of some examples, rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= p).to(x.dtype)
    return x * keep / (1.0 - p)


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch, in_chans=1):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):  # (B, C, T, F)
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, gt * gf, dim), time-major


class Attention(nn.Module):
    def __init__(self, dim, n_heads):
        super().__init__()
        assert dim % n_heads == 0
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, nh, T, hs); flash kernel on GPU
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm-style pre-norm transformer block (names match the official checkpoint)."""

    def __init__(self, dim, n_heads, mlp_ratio, drop_path, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, n_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x):
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)

# -----------------------------------------------------------------------------
# the model

class SpatialAST(nn.Module):

    def __init__(self, args):
        super().__init__()
        self.patch_t, self.patch_f = args.patch, args.patch_f or args.patch
        assert args.n_frames % self.patch_t == 0 and args.n_mels % self.patch_f == 0, 'frames and mels must tile'
        self.args = args
        self.grid_t, self.grid_f = args.n_frames // self.patch_t, args.n_mels // self.patch_f
        D, eps = args.dim, args.norm_eps
        # running statistics over the two log-mel channels stand in for a fixed mean/std (none in the official code)
        self.bn = nn.BatchNorm2d(2, affine=False)
        if args.band_norm:  # per channel and mel band; train_encoder.py fills them from training features
            self.register_buffer('band_mean', torch.zeros(4, args.n_mels))
            self.register_buffer('band_std', torch.ones(4, args.n_mels))
        C = args.stem_channels
        self.conv_downsample = nn.Sequential(nn.Conv2d(4, C, 3, padding=1, bias=False), nn.BatchNorm2d(C), nn.GELU())
        self.patch_embed = PatchEmbed(D, (self.patch_t, self.patch_f), C)
        # a persistent buffer: fixed, saved under the official key, and never seen by the optimizer
        self.register_buffer('pos_embed', sincos_pos_embed(D, self.grid_t, self.grid_f))
        self.cls_tokens = nn.Parameter(torch.zeros(1, N_CLS, D))
        rates = torch.linspace(0, args.drop_path, args.depth).tolist()
        self.blocks = nn.ModuleList(Block(D, args.n_heads, args.mlp_ratio, r, eps) for r in rates)
        self.dis_norm, self.doa_norm, self.fc_norm = (nn.LayerNorm(D, eps=eps) for _ in range(3))
        self.distance_head = nn.Linear(D, args.n_distance)
        self.azimuth_head = nn.Linear(D, args.n_azimuth)
        self.elevation_head = nn.Linear(D, args.n_elevation)
        self.head = nn.Linear(D, args.n_classes)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear layer on the flattened patch
        nn.init.normal_(self.cls_tokens, std=0.02)
        for h in (self.distance_head, self.azimuth_head, self.elevation_head, self.head):
            nn.init.trunc_normal_(h.weight, std=2e-5)  # near-zero heads: start from uniform predictions

    def inputs(self, feats):
        """(B, 4, T, n_mels) features -> the 4 channels that are normalised: as they are, or with mid_side the
        log-mels as their mean and their difference. The difference (the level difference between the ears, band by
        band) does not depend on the source's spectrum; normalised on its own, its few dB are not lost beside the
        log-mels' tens (docs/findings.md)."""
        B, C, T, Fq = feats.shape
        assert C == 4 and Fq == self.args.n_mels, f'expected (B, 4, T, {self.args.n_mels}) features, got {tuple(feats.shape)}'
        if not self.args.mid_side:
            return feats
        left, right = feats[:, :1], feats[:, 1:2]
        return torch.cat([(left + right) / 2, left - right, feats[:, 2:]], dim=1)

    def front(self, feats):
        """(B, 4, T, n_mels) features -> (B, stem_channels, n_frames, n_mels) map the patches are cut from."""
        feats = self.inputs(feats)
        T = feats.shape[2]
        # only the log-mels are normalised; the mel-weighted IPD stays ~1/60 their size (Slaney mel weights sum
        # to ~1/31 per band), which the official run absorbs into the stem over 74k steps; ipd_scale lets a
        # short run start with both inputs at one scale (the stem is linear, so it is a reparameterisation)
        if self.args.band_norm:  # every band at one scale: a high band's level (and IPD) counts as much as a low one's
            x = (feats - self.band_mean[:, None]) / self.band_std[:, None]  # (B, 4, T, M) - (4, 1, M)
            if self.args.band_norm == 'mel':
                x = torch.cat([x[:, :2], feats[:, 2:] * self.args.ipd_scale], dim=1)
        else:
            x = torch.cat([self.bn(feats[:, :2]), feats[:, 2:] * self.args.ipd_scale], dim=1)
        if T != self.args.n_frames:  # official: 1001 -> 1024; here any T is stretched to n_frames
            x = F.interpolate(x, (self.args.n_frames, self.args.n_mels), mode='bicubic', align_corners=True)
        # the official stem squeezes spectra and phases into one channel: a ViT-B pretrained on spectrograms (AudioMAE)
        # copes, but a small model trained from scratch in minutes learns either the class or the direction through
        # it, not both (docs/findings.md); stem_channels > 1 gives each its own channel
        x = self.conv_downsample(x)  # (B, stem_channels, n_frames, n_mels)
        if self.training:
            x = spec_augment(x, self.args.freq_mask, self.args.time_mask, self.args.spec_masks == 'batch')
        return x

    def tokens(self, feats):
        """(B, 4, T, n_mels) -> (B, 3 + N, dim): 3 [CLS] outputs then the patch tokens, no final norm; what BAT's
        projector reads. In training mode N is the number of patches left by the 2-D masking."""
        x = self.patch_embed(self.front(feats))  # (B, N, D)
        x = x + self.pos_embed[:, 1:].to(x.dtype)
        a = self.args
        if self.training and (a.mask_t_prob > 0 or a.mask_f_prob > 0):
            x = random_masking_2d(x, self.grid_t, self.grid_f, a.mask_t_prob, a.mask_f_prob)
        x = torch.cat([self.cls_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # no pos embed on CLS
        for block in self.blocks:
            x = block(x)
        return x

    def heads(self, x):
        """Token sequence (B, 3 + N, dim) -> (class, distance, azimuth, elevation) logits."""
        dis, doa, cls = self.dis_norm(x[:, 0]), self.doa_norm(x[:, 1]), self.fc_norm(x[:, 2])
        return self.head(cls), self.distance_head(dis), self.azimuth_head(doa), self.elevation_head(doa)

    def forward(self, feats):
        return self.heads(self.tokens(feats))

    def flops_per_sample(self, training=True):
        """Matmul FLOPs of one example through the transformer (forward x3 for training), for MFU."""
        a = self.args
        n = N_CLS + (max(1, int(self.grid_t * (1 - a.mask_t_prob))) * max(1, int(self.grid_f * (1 - a.mask_f_prob)))
                     if training else self.grid_t * self.grid_f)
        hidden = int(a.dim * a.mlp_ratio)
        per_token = 2 * (4 * a.dim * a.dim + 2 * a.dim * hidden) * a.depth  # qkv + proj + mlp
        attn = 2 * 2 * n * n * a.dim * a.depth  # scores + weighted sum
        patch = 2 * self.grid_t * self.grid_f * a.dim * self.patch_t * self.patch_f
        return (3 if training else 1) * (n * per_token + attn + patch)

# -----------------------------------------------------------------------------
# loading weights

# the official model computes its STFT/mel inside (torchlibrosa buffers); ours comes from features.py, so those
# tensors are checked against ours (check_front_end) and then left out. `blocks2` is an unused 4-block leftover of
# the official base class, present in some of its checkpoints.
OFFICIAL_IGNORED = ('spectrogram_extractor.', 'logmel_extractor.', 'blocks2.')


def clean_state_dict(sd):
    """Unwrap {'model': ...} / {'state_dict': ...} and strip DDP / torch.compile prefixes."""
    for key in ('model', 'state_dict'):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
    out = {}
    for k, v in sd.items():
        for prefix in ('module.', '_orig_mod.'):
            k = k[len(prefix):] if k.startswith(prefix) else k
        out[k] = v
    return out


def is_official(sd):
    """True for a Spatial-AST state dict without our model_args (the official finetuned.pth, after clean_state_dict)."""
    return 'cls_tokens' in sd and 'distance_head.weight' in sd


def front_end_tensors():
    """What the official file's frozen front end holds if it is ours (features.py), float64: the torchlibrosa STFT
    kernels (periodic Hann times cos / -sin of the DFT, (513, 1, 1024)) and the Slaney mel matrix (513, 128)."""
    import features
    n = features.n_fft
    k = torch.arange(n // 2 + 1, dtype=torch.float64)[:, None]
    t = torch.arange(n, dtype=torch.float64)[None, :]
    window = torch.hann_window(n, periodic=True, dtype=torch.float64)
    angle = 2 * math.pi * k * t / n
    return {'conv_real.weight': (torch.cos(angle) * window)[:, None],
            'conv_imag.weight': (-torch.sin(angle) * window)[:, None], 'melW': features.mel_filterbank().double()}


def check_front_end(sd, where='finetuned.pth'):
    """The official file's frozen front-end tensors (spectrogram_extractor.*, logmel_extractor.melW) must equal
    front_end_tensors(), else the encoder would be fed other features than it was trained on. Absent ones pass."""
    import features
    want = front_end_tensors()
    for key, v in sd.items():
        name = next((n for n in want if key.endswith(n)), None)
        if key.startswith(OFFICIAL_IGNORED[:2]) and name:
            ref = want[name]
            if v.shape != ref.shape or (v.double() - ref).abs().max() > 1e-5:
                raise ValueError(f'{where}: {key} is not the front end of features.py (STFT n_fft {features.n_fft}, '
                                 f'periodic Hann, hop {features.hop}; Slaney mel {features.n_mels} bins '
                                 f'{features.fmin:g}-{features.fmax:g} Hz): the encoder would be fed other features')


def official_args(sd, n_mels=128):
    """ModelArgs of an official Spatial-AST state dict, read off its shapes. Heads are not in the shapes: dim // 64
    (ViT heads are 64 wide: 12 at ViT-B's 768)."""
    dim = sd['cls_tokens'].shape[-1]
    patch = sd['patch_embed.proj.weight'].shape[-1]
    grid_f = n_mels // patch
    n_patches = sd['pos_embed'].shape[1] - 1
    return ModelArgs(n_frames=n_patches // grid_f * patch, n_mels=n_mels, patch=patch, dim=dim,
                     depth=1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.')),
                     n_heads=max(1, dim // 64), mlp_ratio=sd['blocks.0.mlp.fc1.weight'].shape[0] / dim,
                     n_classes=sd['head.weight'].shape[0], n_distance=sd['distance_head.weight'].shape[0],
                     n_azimuth=sd['azimuth_head.weight'].shape[0], n_elevation=sd['elevation_head.weight'].shape[0],
                     stem_channels=sd['conv_downsample.0.weight'].shape[0])


def load_official(model, sd, where='finetuned.pth'):
    """Load the official Spatial-AST `finetuned.pth` (a dict or path): every key of ours must be there with the
    same shape; only the official front-end tensors (checked, check_front_end) are allowed extra. Returns them."""
    if isinstance(sd, str):
        where, sd = sd, load_weights(sd, 'official Spatial-AST weights')
    sd = clean_state_dict(sd)
    check_front_end(sd, where)
    ignored = sorted(k for k in sd if k.startswith(OFFICIAL_IGNORED))
    sd = {k: v for k, v in sd.items() if not k.startswith(OFFICIAL_IGNORED)}
    own = model.state_dict()
    bad = [f'{k}: {tuple(v.shape)} vs ours {tuple(own[k].shape)}' for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f'{where}: official checkpoint shapes differ (set ModelArgs to match): ' + '; '.join(bad))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise KeyError(f'{where}: official checkpoint: missing {missing}, unexpected {unexpected}')
    return ignored


def load_audiomae(model, sd, verbose=True):
    """Partial load of an AudioMAE ViT-B checkpoint (strict=False as the official fine-tuning does): keys with the
    same name and shape load, the rest are reported. Returns {'loaded', 'skipped' (key: reason), 'new'}."""
    sd = clean_state_dict(load_weights(sd, 'AudioMAE weights') if isinstance(sd, str) else sd)
    own = model.state_dict()
    loaded, skipped = {}, {}
    for k, v in sd.items():
        if k not in own:
            skipped[k] = 'not in Spatial-AST'
        elif v.shape != own[k].shape:
            skipped[k] = f'shape {tuple(v.shape)} vs ours {tuple(own[k].shape)}'
        else:
            loaded[k] = v
    model.load_state_dict(loaded, strict=False)
    report = {'loaded': sorted(loaded), 'skipped': skipped, 'new': sorted(k for k in own if k not in loaded)}
    if verbose:
        print(f"AudioMAE load: {len(report['loaded'])} tensors loaded, {len(skipped)} skipped, "
              f"{len(report['new'])} newly initialised")
        for k, why in sorted(skipped.items()):
            print(f'  skipped {k}: {why}')
        print('  new: ' + ', '.join(report['new']))
    return report


def load_checkpoint(path, device='cpu', classes=None):
    """A train_encoder.py ckpt.pt, or the official finetuned.pth (sizes read off its shapes, official_args) ->
    (model in eval mode on device, the checkpoint dict). The official file names no classes: `classes` (the rows of
    class_labels_indices_subset.csv, in order) are kept in the returned dict when given."""
    ckpt = load_weights(str(path), 'encoder checkpoint')
    kind = checkpoint_kind(ckpt)
    if kind == 'spatial_ast':
        sd = clean_state_dict(ckpt)
        args = official_args(sd)
        if classes is not None and len(classes) != args.n_classes:
            raise ValueError(f'{path}: the class head has {args.n_classes} rows, the class list {len(classes)}')
        model = SpatialAST(args)
        load_official(model, sd, path)
        return model.to(device).eval(), {'model_args': asdict(args), 'classes': classes, 'official': True}
    if kind != 'encoder':
        hint = {'bat': f" (it was trained on the encoder {ckpt.get('base', {}).get('encoder')})",
                'audiomae': ' (train_encoder.py --init_from= starts a fine-tune from it)'}.get(kind, '')
        raise SystemExit(f"{path}: this is {KIND_NAMES[kind]}, not a Spatial-AST encoder checkpoint from "
                         f"train_encoder.py or the official finetuned.pth{hint}")
    model = SpatialAST(ModelArgs(**ckpt['model_args']))
    model.load_state_dict(clean_state_dict(ckpt['model']), strict=True)
    return model.to(device).eval(), ckpt
