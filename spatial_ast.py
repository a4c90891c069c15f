"""
Spatial-AST: the binaural encoder of BAT (what BAT hears with), written from the facts of the official model
(reference/bat-facts.md §2 steps 7-13 and §3). It takes the features of features.binaural_features,
(B, 4, T, 128) = [log-mel L, log-mel R, mel cos IPD, mel sin IPD], and gives
  forward(feats) -> (class, distance, azimuth, elevation) logits   (heads on 3 [CLS] tokens)
  tokens(feats)  -> (B, 3 + N, dim) full token sequence, no final norm   (what BAT's projector reads)
                    [+ a position table of the top-k classes, for models with class_positions, see table()]

Parameter names and shapes follow the official model, so its `finetuned.pth` (load_official) and an AudioMAE
ViT-B checkpoint (load_audiomae, partial) load into SpatialAST(ModelArgs()). Our own train_encoder.py
checkpoints load with load_checkpoint(path, device).

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


@dataclass
class ModelArgs:
    n_frames: int = 1024      # time frames after the bicubic resize (10 s = 1001 frames -> 1024)
    n_mels: int = 128         # mel bins of the features
    patch: int = 16           # square patches, stride = patch (no overlap): 64 x 8 = 512 tokens at paper size
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
    norm_eps: float = 1e-6
    ipd_scale: float = 1.0    # multiplies the mel cos/sin IPD channels before the stem (1 = official; see front())
    stem_channels: int = 1    # channels out of the conv stem = into the patch embedding (1 = official; see front())
    class_positions: bool = False  # + a per-class position head (not in the official model; see forward())
    position_tokens: int = 0  # with class_positions: tokens() also gives the top-k classes' positions (see table())
    position_summary: int = 0  # with class_positions: > 0 adds an MLP this wide from the time-averaged spectra to the
                               # position head (not in the official model; see summary())
    band_norm: str = ''       # '' (official) | 'mel': standardise every mel band of the two log-mels | 'all': of all 4
                              # channels, with training-data statistics (buffers band_mean, band_std; see front())

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


def spec_augment(x, freq_mask, time_mask):
    """SpecAugment on (B, C, T, F): one frequency band and one time span zeroed per example, widths uniform in
    [0, freq_mask) and [0, time_mask). (torchaudio's default shares one mask across the batch; per example is the
    stronger augmentation and costs nothing.)"""
    B, _, T, Fq = x.shape

    def band(size, widest):
        width = (torch.rand(B, 1, device=x.device) * min(widest, size)).long()
        start = (torch.rand(B, 1, device=x.device) * (size - width + 1)).long().clamp(max=size - 1)
        idx = torch.arange(size, device=x.device).unsqueeze(0)  # (1, size)
        return (idx >= start) & (idx < start + width)  # (B, size) True = masked

    keep_t = ~band(T, time_mask)[:, None, :, None]  # (B, 1, T, 1)
    keep_f = ~band(Fq, freq_mask)[:, None, None, :]  # (B, 1, 1, F)
    return x * (keep_t & keep_f).to(x.dtype)


def random_masking_2d(x, grid_t, grid_f, mask_t_prob, mask_f_prob):
    """AudioMAE-style structured masking: drop whole time rows and frequency columns of the patch grid.
    x (B, grid_t * grid_f, D) -> (B, keep_t * keep_f, D); the dropped tokens are removed, not zeroed."""
    B, N, D = x.shape
    keep_t, keep_f = int(grid_t * (1 - mask_t_prob)), int(grid_f * (1 - mask_f_prob))
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
        assert args.n_frames % args.patch == 0 and args.n_mels % args.patch == 0, 'frames and mels must tile by patch'
        self.args = args
        self.grid_t, self.grid_f = args.n_frames // args.patch, args.n_mels // args.patch
        D, eps = args.dim, args.norm_eps
        # running statistics over the two log-mel channels stand in for a fixed mean/std (none in the official code)
        self.bn = nn.BatchNorm2d(2, affine=False)
        if args.band_norm:  # per channel and mel band; train_encoder.py fills them from training features
            self.register_buffer('band_mean', torch.zeros(4, args.n_mels))
            self.register_buffer('band_std', torch.ones(4, args.n_mels))
        C = args.stem_channels
        self.conv_downsample = nn.Sequential(nn.Conv2d(4, C, 3, padding=1, bias=False), nn.BatchNorm2d(C), nn.GELU())
        self.patch_embed = PatchEmbed(D, args.patch, C)
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
        if args.class_positions:  # per class: (right, front, up) unit-vector parts from doa, distance from dis
            self.class_direction_head = nn.Linear(D, args.n_classes * 3)
            self.class_distance_head = nn.Linear(D, args.n_classes)
        if args.class_positions and args.position_summary:
            S = 10 * args.n_mels
            # running statistics standardise every summary feature on its own: a band's level varies by tens of dB
            # from sound to sound, the cues in it by a few (a probe MLP: front/behind 58.6 % without, 73.2 %
            # with); affine=False, so the official state dict has nothing new in it
            self.summary_norm = nn.BatchNorm1d(S, affine=False)
            self.summary_head = nn.Sequential(nn.Linear(S, args.position_summary), nn.GELU(),
                                              nn.Linear(args.position_summary, args.n_classes * 4))
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

    def front(self, feats):
        """(B, 4, T, n_mels) features -> (B, stem_channels, n_frames, n_mels) map the patches are cut from."""
        B, C, T, Fq = feats.shape
        assert C == 4 and Fq == self.args.n_mels, f'expected (B, 4, T, {self.args.n_mels}) features, got {tuple(feats.shape)}'
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
            x = F.interpolate(x, (self.args.n_frames, Fq), mode='bicubic', align_corners=True)
        # the official stem squeezes spectra and phases into one channel: a ViT-B pretrained on spectrograms (AudioMAE)
        # copes, but a small model trained from scratch in minutes learns either the class or the direction through
        # it, not both (measured: see config/demo_encoder.py); stem_channels > 1 gives each its own channel
        x = self.conv_downsample(x)  # (B, stem_channels, n_frames, n_mels)
        if self.training:
            x = spec_augment(x, self.args.freq_mask, self.args.time_mask)
        return x

    def encode(self, feats):
        """(B, 4, T, n_mels) -> (B, 3 + N, dim): 3 [CLS] outputs then the patch tokens, no final norm.
        In training mode N is the number of patches left by the 2-D masking."""
        x = self.patch_embed(self.front(feats))  # (B, N, D)
        x = x + self.pos_embed[:, 1:].to(x.dtype)
        a = self.args
        if self.training and (a.mask_t_prob > 0 or a.mask_f_prob > 0):
            x = random_masking_2d(x, self.grid_t, self.grid_f, a.mask_t_prob, a.mask_f_prob)
        x = torch.cat([self.cls_tokens.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # no pos embed on CLS
        for block in self.blocks:
            x = block(x)
        return x

    def summary(self, feats):
        """(B, 4, T, n_mels) features -> (B, 10 * n_mels) standardised time averages: the mean and std over time of
        log-mel left, right, left - right (the level difference) and the two IPD channels, per mel. Front/behind and
        above/below live in how the head and pinnae shape these spectra, which a time average keeps and a 16 x 16
        patch spreads thin: the demo's patch-only encoder stays at chance on both, an MLP on these gets 70-75 %
        (README, "Front/behind and above/below")."""
        x = torch.cat([feats, feats[:, :1] - feats[:, 1:2]], 1)  # (B, 5, T, M)
        return self.summary_norm(torch.cat([x.mean(2), x.std(2)], 1).flatten(1))  # (B, 10 * M)

    def heads(self, x, positions=False, feats=None):
        """Token sequence -> (class, distance, azimuth, elevation) logits [, (B, n_classes, 4) class positions].
        Models with position_summary also need the features the tokens came from (feats)."""
        dis, doa, cls = self.dis_norm(x[:, 0]), self.doa_norm(x[:, 1]), self.fc_norm(x[:, 2])
        out = self.head(cls), self.distance_head(dis), self.azimuth_head(doa), self.elevation_head(doa)
        if not positions:
            return out
        B, C = x.shape[0], self.args.n_classes
        pos = torch.cat([self.class_direction_head(doa).view(B, C, 3), self.class_distance_head(dis).view(B, C, 1)], -1)
        if self.args.position_summary:
            # a mix's summary blends both sounds; each class's rows of this MLP learn to read the bands it sounds in
            assert feats is not None, 'position_summary models need feats for their position head'
            pos = pos + self.summary_head(self.summary(feats)).view(B, C, 4)
        return out + (pos,)

    def forward(self, feats, positions=False):
        """-> (class, distance, azimuth, elevation) logits; with positions=True (class_positions models) also
        (B, n_classes, 4): where each class's source is, (right, front, up, distance / 2 m). The official heads name
        one position per clip, so in a two-source mix nothing ties a position to a sound; this head must answer
        "where is the dog" for every class, which a mix can only teach by binding each sound to its own cues."""
        return self.heads(self.encode(feats), positions, feats)

    def table(self, x, heads):
        """The position table: (B, k, dim) tokens, one per top-k class by probability, laid out as
        [one-hot class (n_classes) | probability | right, front, up, distance / 2 m | one-hot rank (k) | zeros].
        A reader finds "the dog" by its one-hot and reads its position off the same token; in the [CLS] tokens every
        class's position is mixed into one vector. heads: self.heads(x, True, feats)."""
        k, C, D = self.args.position_tokens, self.args.n_classes, self.args.dim
        assert C + 5 + k <= D, f'position_tokens need dim >= n_classes + 5 + k = {C + 5 + k}, have {D}'
        logits, _, _, _, pos = heads
        prob, top = torch.sigmoid(logits.float()).topk(k, dim=-1)  # (B, k) each
        rows = torch.cat([F.one_hot(top, C).float(), prob.unsqueeze(-1),
                          pos.float().gather(1, top.unsqueeze(-1).expand(-1, -1, 4)),
                          torch.eye(k, device=x.device).expand(x.shape[0], -1, -1)], -1)  # (B, k, C + 5 + k)
        return F.pad(rows, (0, D - rows.shape[-1])).to(x.dtype)

    @property
    def n_table_tokens(self):
        """How many position-table tokens tokens() appends (0 unless class_positions and position_tokens > 0)."""
        return self.args.position_tokens if self.args.class_positions else 0

    def class_rows(self, x, heads):
        """Every class's row of the position head, in class order: (B, n_classes, dim) laid out as
        [probability | right, front, up, distance / 2 m | zeros]. BAT's named-source slots (bat.NamedSources)
        pick the rows of the classes a question names. heads: self.heads(x, True, feats)."""
        logits, _, _, _, pos = heads
        rows = torch.cat([torch.sigmoid(logits.float()).unsqueeze(-1), pos.float()], -1)  # (B, C, 5)
        return F.pad(rows, (0, self.args.dim - rows.shape[-1])).to(x.dtype)

    def tokens(self, feats, class_rows=False):
        """What BAT's projector reads: (B, 3 + N + n_table_tokens [+ n_classes], dim), the encoder's token sequence
        (see encode), then, for class_positions models with position_tokens > 0, the position table (see table),
        then with class_rows=True (class_positions models) every class's position row (see class_rows)."""
        x = self.encode(feats)
        assert self.args.class_positions or not class_rows, \
            'class_rows needs an encoder trained with class_positions=True'
        heads = self.heads(x, True, feats) if self.n_table_tokens or class_rows else None  # once for both
        extra = [self.table(x, heads)] if self.n_table_tokens else []
        if class_rows:
            extra.append(self.class_rows(x, heads))
        return torch.cat([x] + extra, 1)

    def flops_per_sample(self, training=True):
        """Matmul FLOPs of one example through the transformer (forward x3 for training), for MFU."""
        a = self.args
        n = N_CLS + (int(self.grid_t * (1 - a.mask_t_prob)) * int(self.grid_f * (1 - a.mask_f_prob))
                     if training else self.grid_t * self.grid_f)
        hidden = int(a.dim * a.mlp_ratio)
        per_token = 2 * (4 * a.dim * a.dim + 2 * a.dim * hidden) * a.depth  # qkv + proj + mlp
        attn = 2 * 2 * n * n * a.dim * a.depth  # scores + weighted sum
        patch = 2 * self.grid_t * self.grid_f * a.dim * a.patch * a.patch
        return (3 if training else 1) * (n * per_token + attn + patch)

# -----------------------------------------------------------------------------
# loading weights

# the official model computes its STFT/mel inside (torchlibrosa buffers); ours comes from features.py.
# `blocks2` is an unused 4-block leftover of the official base class, present in some of its checkpoints.
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


def load_official(model, sd):
    """Load the official Spatial-AST `finetuned.pth` (a dict or path): every key of ours must be there with the
    same shape; only the official front-end buffers are allowed extra. Returns the ignored keys."""
    sd = clean_state_dict(torch.load(sd, map_location='cpu', weights_only=False) if isinstance(sd, str) else sd)
    ignored = sorted(k for k in sd if k.startswith(OFFICIAL_IGNORED))
    sd = {k: v for k, v in sd.items() if not k.startswith(OFFICIAL_IGNORED)}
    own = model.state_dict()
    bad = [f'{k}: {tuple(v.shape)} vs ours {tuple(own[k].shape)}' for k, v in sd.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError('official checkpoint shapes differ (set ModelArgs to match): ' + '; '.join(bad))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise KeyError(f'official checkpoint: missing {missing}, unexpected {unexpected}')
    return ignored


def load_audiomae(model, sd, verbose=True):
    """Partial load of an AudioMAE ViT-B checkpoint (strict=False as the official fine-tuning does): keys with the
    same name and shape load, the rest are reported. Returns {'loaded', 'skipped' (key: reason), 'new'}."""
    sd = clean_state_dict(torch.load(sd, map_location='cpu', weights_only=False) if isinstance(sd, str) else sd)
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


def load_checkpoint(path, device='cpu'):
    """A train_encoder.py ckpt.pt -> (model in eval mode on device, the checkpoint dict)."""
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    for key in ('model', 'model_args'):
        if key not in ckpt:
            raise KeyError(f"{path}: not a train_encoder.py checkpoint (no '{key}')")
    model = SpatialAST(ModelArgs(**ckpt['model_args']))
    model.load_state_dict(clean_state_dict(ckpt['model']), strict=True)
    return model.to(device).eval(), ckpt


def model_args_dict(args):
    return asdict(args)
