"""spatial_ast.py: shapes, train-only augmentations, positional table, and loading official / AudioMAE names."""
import pytest
import torch

from spatial_ast import (ModelArgs, SpatialAST, front_end_tensors, load_audiomae, load_official, random_masking_2d,
                         sincos_pos_embed, spec_augment)

TINY = dict(dim=32, depth=2, n_heads=2, n_frames=64, n_classes=5, freq_mask=8, time_mask=16)


def tiny(**kw):
    torch.manual_seed(0)
    return SpatialAST(ModelArgs(**{**TINY, **kw}))


def test_paper_defaults():
    a = ModelArgs()
    assert (a.n_frames, a.n_mels, a.patch, a.dim, a.depth, a.n_heads, a.mlp_ratio) == (1024, 128, 16, 768, 12, 12, 4.0)
    assert (a.n_classes, a.n_distance, a.n_azimuth, a.n_elevation) == (355, 21, 360, 180)
    assert (a.drop_path, a.mask_t_prob, a.mask_f_prob, a.freq_mask, a.time_mask) == (0.1, 0.25, 0.25, 48, 192)
    assert (a.ipd_scale, a.stem_channels, a.patch_f) == (1.0, 1, 0)  # the official front, square patches


def test_wider_stem_channels():
    m = tiny(stem_channels=4).eval()
    sd = m.state_dict()
    assert sd['conv_downsample.0.weight'].shape == (4, 4, 3, 3) and sd['patch_embed.proj.weight'].shape == (32, 4, 16, 16)
    feats = torch.randn(2, 4, 50, 128)
    assert m.front(feats).shape == (2, 4, 64, 128)
    assert m.tokens(feats).shape == (2, 3 + 4 * 8, 32)
    # each stem channel reaches the patch embedding: zeroing one channel's patch weights changes the tokens
    with torch.no_grad():
        before = m.tokens(feats)
        m.patch_embed.proj.weight[:, 3] = 0
        assert not torch.allclose(m.tokens(feats), before)


def test_full_band_patches():
    # patch_f=n_mels: one token per 16 frames, each a linear map of the whole spectrum of those frames
    m = tiny(patch_f=128, stem_channels=4).eval()
    assert (m.grid_t, m.grid_f) == (4, 1) and m.pos_embed.shape == (1, 5, 32)
    assert m.state_dict()['patch_embed.proj.weight'].shape == (32, 4, 16, 128)
    feats = torch.randn(2, 4, 50, 128)
    assert m.tokens(feats).shape == (2, 3 + 4, 32)
    with torch.no_grad():  # the top mel band reaches every token (a square patch would confine it to one column)
        before = m.tokens(feats)
        m.patch_embed.proj.weight[:, :, :, -1] = 0
        after = m.tokens(feats)
    assert not torch.allclose(after[:, 3:], before[:, 3:])
    m.train()  # frequency masking of the patch grid has a single column to keep
    assert m.tokens(feats).shape == (2, 3 + 3 * 1, 32)


def test_band_norm_standardises_each_band():
    m = tiny(band_norm='all').eval()
    assert 'band_mean' in m.state_dict() and 'band_mean' not in tiny().state_dict()  # official dict unchanged
    feats = torch.randn(2, 4, 64, 128) * torch.linspace(0.1, 5, 128) + torch.arange(4.0)[:, None, None]
    with torch.no_grad():
        m.band_mean.copy_(feats.mean((0, 2)))
        m.band_std.copy_(feats.std((0, 2)))
    m.conv_downsample = torch.nn.Identity()  # what the stem reads: every band of every channel at mean 0, std 1
    with torch.no_grad():
        x = m.front(feats)
    assert torch.allclose(x.mean((0, 2)), torch.zeros(4, 128), atol=1e-4)
    assert torch.allclose(x.std((0, 2)), torch.ones(4, 128), atol=1e-3)
    m.args.band_norm = 'mel'  # only the log-mels: the IPD channels as without band_norm (x ipd_scale)
    with torch.no_grad():
        x = m.front(feats)
    assert torch.allclose(x[:, :2].std((0, 2)), torch.ones(2, 128), atol=1e-3)
    assert torch.equal(x[:, 2:], feats[:, 2:] * m.args.ipd_scale)


def test_mid_side_inputs():
    assert not ModelArgs().mid_side and tiny(mid_side=True).state_dict().keys() == tiny().state_dict().keys()
    feats = torch.randn(2, 4, 50, 128)
    feats[:, 1] = feats[:, 0] - 3.0  # left 3 dB louder than right in every band
    x = tiny(mid_side=True).inputs(feats)
    assert torch.allclose(x[:, 0], feats[:, 0] - 1.5) and torch.allclose(x[:, 1], torch.full_like(x[:, 1], 3.0))
    assert torch.equal(x[:, 2:], feats[:, 2:]) and torch.equal(tiny().inputs(feats), feats)
    m = tiny(mid_side=True).eval()
    with torch.no_grad():  # the difference channel reaches the tokens
        base = feats.clone()
        base[:, 1] = base[:, 0]
        assert not torch.allclose(m.tokens(feats), m.tokens(base))


def test_shapes_train_and_eval():
    m = tiny()
    feats = torch.randn(3, 4, 50, 128)  # any T: stretched to n_frames
    m.eval()
    c, d, a, e = m(feats)
    assert c.shape == (3, 5) and d.shape == (3, 21) and a.shape == (3, 360) and e.shape == (3, 180)
    assert m.tokens(feats).shape == (3, 3 + 4 * 8, 32)  # 64/16 x 128/16 patches
    m.train()
    # masking keeps int(4 * 0.75) = 3 time rows x int(8 * 0.75) = 6 frequency columns
    assert m.tokens(feats).shape == (3, 3 + 3 * 6, 32)
    assert m(feats)[2].shape == (3, 360)


def test_augmentations_only_in_training():
    m = tiny()
    feats = torch.randn(2, 4, 64, 128)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m.tokens(feats), m.tokens(feats))  # deterministic
    m.train()
    with torch.no_grad():
        t1, t2 = m.tokens(feats), m.tokens(feats)
    assert not torch.equal(t1, t2)  # masking / SpecAugment / drop-path draw afresh


def test_spec_augment_masks_one_band_each():
    torch.manual_seed(1)
    x = torch.ones(8, 1, 100, 40)
    y = spec_augment(x, freq_mask=10, time_mask=30)
    for b in range(8):
        zero_t = (y[b, 0] == 0).all(dim=1)  # whole frames masked
        zero_f = (y[b, 0] == 0).all(dim=0)  # whole bins masked
        assert zero_t.sum() < 30 and zero_f.sum() < 10
        idx = torch.nonzero(zero_t).flatten()  # one contiguous span
        assert len(idx) == 0 or idx.max() - idx.min() + 1 == len(idx)
    assert (y == 0).any()


def test_random_masking_2d_keeps_whole_rows_and_columns():
    grid_t, grid_f, D = 8, 4, 2
    idx = torch.arange(grid_t * grid_f).float()
    x = torch.stack([idx, idx], -1)[None].repeat(3, 1, 1)  # token value = its index
    y = random_masking_2d(x, grid_t, grid_f, 0.25, 0.5)
    assert y.shape == (3, 6 * 2, D)
    for b in range(3):
        kept = y[b, :, 0].long()
        rows, cols = set((kept // grid_f).tolist()), set((kept % grid_f).tolist())
        assert len(rows) == 6 and len(cols) == 2 and len(set(kept.tolist())) == 12  # a full sub-grid


def test_sincos_layout():
    pe = sincos_pos_embed(16, 4, 2)
    assert pe.shape == (1, 9, 16) and torch.all(pe[0, 0] == 0)
    # patch k = t * grid_f + f: first half of the channels depends on f only, the second half on t only
    t = torch.arange(8) // 2
    f = torch.arange(8) % 2
    first, second = pe[0, 1:, :8], pe[0, 1:, 8:]
    assert torch.allclose(first[f == 0], first[0].expand(4, 8)) and torch.allclose(second[t == 0], second[0].expand(2, 8))
    assert torch.allclose(second[0, :4], torch.zeros(4)) and torch.allclose(second[0, 4:], torch.ones(4))  # sin 0, cos 0


def official_state_dict(a):
    """The key names and shapes of the official Spatial-AST checkpoint for ModelArgs a (incl. its front-end
    buffers and the unused blocks2 of its base class), filled with random numbers."""
    D, H = a.dim, int(a.dim * a.mlp_ratio)
    gt, gf = a.n_frames // a.patch, a.n_mels // a.patch
    shapes = {'cls_tokens': (1, 3, D), 'pos_embed': (1, 1 + gt * gf, D),
              'patch_embed.proj.weight': (D, 1, a.patch, a.patch), 'patch_embed.proj.bias': (D,),
              'spectrogram_extractor.stft.conv_real.weight': (513, 1, 1024),
              'spectrogram_extractor.stft.conv_imag.weight': (513, 1, 1024), 'logmel_extractor.melW': (513, 128),
              'conv_downsample.0.weight': (1, 4, 3, 3), 'bn.running_mean': (2,), 'bn.running_var': (2,),
              'head.weight': (a.n_classes, D), 'head.bias': (a.n_classes,),
              'distance_head.weight': (21, D), 'distance_head.bias': (21,),
              'azimuth_head.weight': (360, D), 'azimuth_head.bias': (360,),
              'elevation_head.weight': (180, D), 'elevation_head.bias': (180,)}
    for k in ('weight', 'bias', 'running_mean', 'running_var'):
        shapes[f'conv_downsample.1.{k}'] = (1,)
    for n in ('dis_norm', 'doa_norm', 'fc_norm'):
        shapes[f'{n}.weight'] = shapes[f'{n}.bias'] = (D,)
    for prefix, depth in (('blocks', a.depth), ('blocks2', 1)):
        for i in range(depth):
            b = f'{prefix}.{i}.'
            shapes.update({b + 'norm1.weight': (D,), b + 'norm1.bias': (D,), b + 'attn.qkv.weight': (3 * D, D),
                           b + 'attn.qkv.bias': (3 * D,), b + 'attn.proj.weight': (D, D), b + 'attn.proj.bias': (D,),
                           b + 'norm2.weight': (D,), b + 'norm2.bias': (D,), b + 'mlp.fc1.weight': (H, D),
                           b + 'mlp.fc1.bias': (H,), b + 'mlp.fc2.weight': (D, H), b + 'mlp.fc2.bias': (D,)})
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    for k in ('bn.running_var', 'conv_downsample.1.running_var'):
        sd[k] = sd[k].abs() + 0.1
    sd['bn.num_batches_tracked'] = sd['conv_downsample.1.num_batches_tracked'] = torch.tensor(7)
    for k, v in front_end_tensors().items():  # the frozen front end is checked on load: the official values
        sd[next(n for n in sd if n.endswith(k))] = v.float()
    return sd


def test_official_names_load_strict():
    m = tiny()
    sd = official_state_dict(m.args)
    ignored = load_official(m, {'model': {'module.' + k: v for k, v in sd.items()}})
    assert 'logmel_extractor.melW' in ignored and 'blocks2.0.attn.qkv.weight' in ignored
    own = m.state_dict()
    for k, v in own.items():
        assert torch.equal(v, sd[k]), k  # every one of our tensors came from the checkpoint
    m.eval()
    assert torch.isfinite(m(torch.randn(1, 4, 64, 128))[0]).all()
    del sd['doa_norm.bias']
    with pytest.raises(KeyError, match='doa_norm.bias'):
        load_official(tiny(), sd)
    sd = official_state_dict(m.args)
    sd['head.weight'] = torch.zeros(7, 32)
    with pytest.raises(ValueError, match='head.weight'):
        load_official(tiny(), sd)


def test_audiomae_partial_load_report():
    m = tiny()
    a = m.args
    sd = official_state_dict(a)
    # an AudioMAE ViT: one cls_token, a final norm, a 527-way head, a decoder; none of our new modules
    mae = {k: v for k, v in sd.items() if k.startswith(('blocks.', 'patch_embed', 'pos_embed'))}
    mae.update({'cls_token': torch.zeros(1, 1, a.dim), 'norm.weight': torch.ones(a.dim), 'norm.bias': torch.zeros(a.dim),
                'head.weight': torch.zeros(527, a.dim), 'head.bias': torch.zeros(527),
                'decoder_embed.weight': torch.zeros(16, a.dim)})
    before = m.state_dict()['conv_downsample.0.weight'].clone()
    report = load_audiomae(m, {'model': mae}, verbose=False)
    assert 'blocks.1.mlp.fc2.weight' in report['loaded'] and 'pos_embed' in report['loaded']
    assert 'shape' in report['skipped']['head.weight'] and report['skipped']['cls_token'] == 'not in Spatial-AST'
    assert {'cls_tokens', 'conv_downsample.0.weight', 'head.weight', 'azimuth_head.weight', 'doa_norm.weight'} <= set(report['new'])
    assert torch.equal(m.state_dict()['blocks.0.attn.qkv.weight'], mae['blocks.0.attn.qkv.weight'])
    assert torch.equal(m.state_dict()['conv_downsample.0.weight'], before)
    assert set(report['loaded']) | set(report['new']) == set(m.state_dict())


def test_paper_size_token_count():
    # the paper's width and input size with a single block (to stay fast): 512 patches, 515 tokens
    m = SpatialAST(ModelArgs(depth=1)).eval()
    assert (m.grid_t, m.grid_f) == (64, 8) and m.pos_embed.shape == (1, 513, 768)
    with torch.no_grad():
        assert m.tokens(torch.randn(1, 4, 1001, 128)).shape == (1, 515, 768)
    per_block = sum(p.numel() for p in m.blocks[0].parameters())
    total = sum(p.numel() for p in m.parameters()) + 11 * per_block
    assert total == pytest.approx(86.5e6, rel=0.02)  # ViT-B + heads
