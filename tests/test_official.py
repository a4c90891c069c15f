"""
The official release drops in unchanged. Every official file is written here by the test itself, at small sizes, with
the official names and shapes (or by transformers / peft themselves): Spatial-AST's finetuned.pth, the SLAM-LLM BAT
model.pt (Blip2QFormerModel + peft LoRA), a Llama-2-layout HF dir, SpatialSoundQA {"data": [...]} files, mp3d_reverb
float64 IRs, Spatial-AST's AudioSet list-form metadata with its class CSV and weights CSV.
Run: python -m pytest -q tests/test_official.py   (CPU, no downloads)
"""
import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import bat
import llama
import spatial_ast

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SR = 32000


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def randomise(module, seed=0):
    """Random values everywhere (norm weights around 1), so a wrong name or a skipped piece cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if 'norm' in name.lower() and name.endswith('weight'):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))

# -----------------------------------------------------------------------------
# official files, written the way the release writes them

def torchlibrosa_front_end():
    """The frozen tensors the official model saves (torchlibrosa STFT kernels, librosa's mel matrix), float32."""
    librosa = pytest.importorskip('librosa')
    n = 1024
    window = librosa.filters.get_window('hann', n, fftbins=True)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n)[:, :n // 2 + 1] * window[:, None]
    return {'spectrogram_extractor.conv_real.weight': torch.tensor(np.real(dft).T[:, None, :], dtype=torch.float32),
            'spectrogram_extractor.conv_imag.weight': torch.tensor(np.imag(dft).T[:, None, :], dtype=torch.float32),
            'logmel_extractor.melW': torch.tensor(librosa.filters.mel(sr=SR, n_fft=n, n_mels=128, fmin=50, fmax=14000).T,
                                                  dtype=torch.float32)}


SMALL_ENC = dict(n_frames=64, patch=16, dim=64, depth=1, n_heads=1, n_classes=5, drop_path=0.0)


def write_finetuned(path, seed=0, **front):
    """A finetuned.pth as main_finetune.py saves it: {'model', 'optimizer', 'epoch', 'scaler', 'args' (Namespace)},
    official key names, small random tensors, the front-end tensors included."""
    torch.manual_seed(seed)
    model = spatial_ast.SpatialAST(spatial_ast.ModelArgs(**SMALL_ENC))
    randomise(model, seed)
    sd = {**model.state_dict(), **torchlibrosa_front_end(), **front}
    args = argparse.Namespace(nb_classes=SMALL_ENC['n_classes'], blr=1e-3, mask_2d=True)
    torch.save({'model': sd, 'optimizer': {}, 'epoch': 99, 'scaler': {}, 'args': args}, path)
    return model


def small_blip2(n_layers=3, hidden=32, heads=4, ffn=48, encoder_hidden=24, seed=0):
    transformers = pytest.importorskip('transformers')
    cfg = transformers.Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=heads,
                                          intermediate_size=ffn, encoder_hidden_size=encoder_hidden)
    torch.manual_seed(seed)
    model = transformers.Blip2QFormerModel(cfg).eval()
    randomise(model, seed)
    return model


def slam_projector_sd(qformer, n_query, llm_dim, seed=0):
    """encoder_projector.* as SLAM-LLM's EncoderProjectorQFormer saves them, and the module to check against."""
    g = torch.Generator().manual_seed(seed)
    hidden = qformer.config.hidden_size
    query = torch.randn(1, n_query, hidden, generator=g)
    linear, norm = torch.nn.Linear(hidden, llm_dim), torch.nn.LayerNorm(llm_dim, eps=1e-5)
    randomise(linear, seed + 1), randomise(norm, seed + 2)
    sd = {'encoder_projector.query': query}
    sd.update({f'encoder_projector.qformer.{k}': v for k, v in qformer.state_dict().items()})
    sd.update({f'encoder_projector.linear.{k}': v for k, v in linear.state_dict().items()})
    sd.update({f'encoder_projector.norm.{k}': v for k, v in norm.state_dict().items()})

    def reference(x):
        out = qformer(query_embeds=query.expand(x.shape[0], -1, -1), encoder_hidden_states=x, return_dict=True)
        return norm(linear(out.last_hidden_state))
    return sd, reference

# -----------------------------------------------------------------------------
# Q-Former and LoRA parity

def test_qformer_equals_blip2qformermodel():
    """Our Q-Former with a Blip2QFormerModel's weights (loaded under their own names) gives its outputs: the
    encoder tokens go in as they are (no norm), cross-attention every 2nd layer, BERT post-norm layers."""
    qformer = small_blip2()
    sd, reference = slam_projector_sd(qformer, n_query=5, llm_dim=40)
    state = bat.slam_projector_state(sd)
    args = bat.slam_qformer_args(state, n_heads=4)
    assert (args.n_layers, args.n_query, args.dim, args.ffn_dim, args.encoder_dim, args.llm_dim, args.cross_every) \
        == (3, 5, 32, 48, 24, 40, 2)
    ours = bat.QFormer(args).eval()
    ours.load_state_dict(state, strict=True)
    x = 3.0 * torch.randn(2, 17, 24, generator=torch.Generator().manual_seed(5))  # un-normalised, as Spatial-AST's
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5, diff
    assert not any('audio_norm' in k for k in ours.state_dict())


def test_slam_projector_rejects_unknown_keys():
    sd, _ = slam_projector_sd(small_blip2(n_layers=2), n_query=2, llm_dim=8)
    sd['encoder_projector.qformer.encoder.layer.0.mystery.weight'] = torch.zeros(1)
    with pytest.raises(KeyError, match='mystery'):
        bat.slam_projector_state(sd)


def tiny_hf_llama(path, vocab_size, seed=0, n_kv_heads=4):
    """A random Llama-2-layout HF dir written by transformers (save_pretrained); returns the HF model."""
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=n_kv_heads, vocab_size=vocab_size, max_position_embeddings=512,
                                   rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
                                   bos_token_id=1, eos_token_id=2)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(path)
    return hf


def peft_lora(hf, rank=4, alpha=32, targets=('q_proj', 'v_proj'), seed=0):
    """The released recipe's LoRA made by peft on hf, with random A and B (B starts at zero in peft: a zero update
    would hide a wrong mapping). Returns (peft model, its LoRA tensors as SLAM saves them: 'llm.' + peft names)."""
    peft = pytest.importorskip('peft')
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.05, bias='none',
                          task_type='CAUSAL_LM')
    model = peft.get_peft_model(hf, cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_' in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    lora = {f'llm.{k}': v.clone() for k, v in model.state_dict().items() if 'lora_' in k}
    return model, lora


@pytest.mark.parametrize('targets', [('q_proj', 'v_proj'), ('q_proj', 'k_proj', 'v_proj', 'o_proj')])
def test_peft_lora_parity(tmp_path, targets):
    """A peft LoRA on a HF LLaMA, loaded onto llama.py's LoRA: the same logits (q/k B rows un-permuted)."""
    hf = tiny_hf_llama(tmp_path, vocab_size=80, n_kv_heads=2 if 'k_proj' in targets else 4)
    model, lora = peft_lora(hf, targets=targets)
    assert all(k.startswith('llm.base_model.model.model.layers.') for k in lora)
    ours = llama.load(tmp_path)
    rank, names = llama.peft_lora_shape(lora)
    assert rank == 4 and set(names) == {llama.HF_LAYER[f'self_attn.{t}'].split('.')[-1] for t in targets}
    llama.apply_lora(ours, rank=rank, alpha=32, targets=names)
    llama.load_peft_lora(ours, lora)
    ours.eval()
    x = torch.randint(3, 80, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(input_ids=x).logits
        diff = (ours(x) - ref).abs().max().item()
    assert diff <= 1e-4, diff
    with torch.no_grad(), model.disable_adapter():
        assert (model(input_ids=x).logits - ref).abs().max() > 1e-2  # the LoRA changes the logits: the test can fail

# -----------------------------------------------------------------------------
# finetuned.pth

def test_finetuned_pth_loads_with_sizes_from_shapes(tmp_path):
    ref = write_finetuned(tmp_path / 'finetuned.pth')
    classes = [f'class {i}' for i in range(SMALL_ENC['n_classes'])]
    model, ck = spatial_ast.load_checkpoint(str(tmp_path / 'finetuned.pth'), classes=classes)
    a = model.args
    assert (a.dim, a.depth, a.n_heads, a.n_frames, a.patch, a.n_classes) == (64, 1, 1, 64, 16, 5)
    assert ck['classes'] == classes and ck['official']
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(ValueError, match='class list'):
        spatial_ast.load_checkpoint(str(tmp_path / 'finetuned.pth'), classes=classes[:3])


def test_finetuned_pth_front_end_is_checked(tmp_path):
    """The frozen STFT / mel tensors of the file are compared with features.py's: another mel matrix is refused."""
    mel = torchlibrosa_front_end()['logmel_extractor.melW']
    write_finetuned(tmp_path / 'bad.pth', **{'logmel_extractor.melW': mel.roll(1, dims=1)})
    with pytest.raises(ValueError, match='logmel_extractor.melW'):
        spatial_ast.load_checkpoint(str(tmp_path / 'bad.pth'))
