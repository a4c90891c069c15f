"""
llama.py against transformers' LlamaForCausalLM (parity), and against itself (KV cache, padding, LoRA, loaders).
Run: python -m pytest -q tests/test_llama.py    (CPU, tiny random models, ~30 s)
"""
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import llama
from llama import (CheckpointError, ModelArgs, Transformer, apply_lora, load, load_lora, lora_state_dict, merge_lora,
                   permute_qk, unpermute_qk)

pytestmark = [pytest.mark.usefixtures('one_thread'), pytest.mark.xdist_group('llama')]  # conftest.py; test.sh


TINY = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, multiple_of=32, max_seq_len=128)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    m = Transformer(ModelArgs(**{**TINY.__dict__, **kw})).eval()
    with torch.no_grad():  # random norm weights, so a wrong norm/name mapping cannot hide behind ones
        for n, p in m.named_parameters():
            if n.endswith('norm.weight'):
                p.uniform_(0.5, 1.5)
    return m


def write_hf(path, n_kv_heads, shard=False, seed=0):
    """A random LLaMA checkpoint written by transformers itself; returns the HF model."""
    import transformers
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=n_kv_heads, vocab_size=96, max_position_embeddings=128,
                                   rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if n.endswith('norm.weight'):
                p.uniform_(0.5, 1.5)
    hf.save_pretrained(path, max_shard_size='40KB' if shard else '1GB')
    return hf


@pytest.fixture(scope='module', params=['mha', 'gqa_sharded'])
def hf_pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    shard = request.param == 'gqa_sharded'
    hf = write_hf(path, n_kv_heads=2 if shard else 4, shard=shard)
    if shard:
        assert (path / 'model.safetensors.index.json').exists()
    return hf, load(path), path


def test_hf_logits_match(hf_pair):
    hf, ours, _ = hf_pair
    x = torch.randint(0, 96, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(x) - hf(x).logits).abs().max().item()
    assert diff <= 1e-4


def test_hf_greedy_generation_identical(hf_pair):
    hf, ours, _ = hf_pair
    x = torch.randint(3, 96, (2, 7), generator=torch.Generator().manual_seed(2))
    hf.generation_config.eos_token_id = None  # run all 32 steps on both sides
    ref = hf.generate(x, max_new_tokens=32, do_sample=False, attention_mask=torch.ones_like(x))
    assert torch.equal(ours.generate(x, max_new_tokens=32), ref)


def test_hf_left_padded_logits_match(hf_pair):
    hf, ours, _ = hf_pair
    x = torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(x)
    mask[0, :5] = 0  # row 0 left-padded by 5
    x[0, :5] = 0
    with torch.no_grad():
        a = ours(x, attention_mask=mask)
        b = hf(x, attention_mask=mask).logits
    real = mask.bool()
    assert (a[real] - b[real]).abs().max().item() <= 1e-4


def test_rope_convention_is_metas_interleaved():
    # our rotation == rotating each interleaved pair (x[2j], x[2j+1]) by the angle pos * 10000^(-2j/8), written out
    x = torch.randn(2, 5, 3, 8)
    rot = llama.rope_table(8, 16, 10000.0, 'cpu')
    pos = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    ours = llama.apply_rope(x, rot[pos][:, :, None])
    angle = (pos[..., None] * 10000.0 ** (-torch.arange(0, 8, 2) / 8))[:, :, None]  # (B, T, 1, 4)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    ref = torch.stack((x0 * angle.cos() - x1 * angle.sin(), x0 * angle.sin() + x1 * angle.cos()), -1).flatten(-2)
    assert (ours - ref).abs().max() < 1e-5
    w = torch.randn(2 * 8, 5)
    assert torch.equal(unpermute_qk(permute_qk(w, 2), 2), w)
    assert not torch.equal(permute_qk(w, 2), w)


def step_logits(m, x=None, embeds=None, mask=None, n_prefill=4):
    """Logits of every position computed chunk + one token at a time through the KV cache."""
    seq = x if embeds is None else embeds
    B, T = seq.shape[:2]
    cache = m.new_cache(B, T)
    kw = lambda s, e: dict(tokens=None if x is None else x[:, s:e], embeds=None if embeds is None else embeds[:, s:e],
                           attention_mask=None if mask is None else mask[:, :e], cache=cache, start_pos=s)
    out = [m(**kw(0, n_prefill))]
    for t in range(n_prefill, T):
        out.append(m(**kw(t, t + 1)))
    return torch.cat(out, 1)


@torch.no_grad()
def test_kv_cache_equals_full_recompute():
    m = tiny_model()
    x = torch.randint(0, 96, (2, 20))
    assert (step_logits(m, x) - m(x)).abs().max() <= 1e-5
    # a longer chunk after cached tokens (causal with an offset)
    cache = m.new_cache(2, 20)
    m(x[:, :6], cache=cache)
    assert (m(x[:, 6:], cache=cache, start_pos=6) - m(x)[:, 6:]).abs().max() <= 1e-5


@torch.no_grad()
def test_kv_cache_with_embeds_prefix_and_left_padding():
    m = tiny_model()
    x = torch.randint(0, 96, (3, 12))
    prefix = torch.randn(3, 5, 64) * 0.5  # stands in for projected audio tokens
    e = torch.cat([prefix, m.embed(x)], 1)
    assert (step_logits(m, embeds=e) - m(embeds=e)).abs().max() <= 1e-5
    mask = torch.ones(3, 17, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :6] = 0
    full = m(embeds=e, attention_mask=mask)
    stepped = step_logits(m, embeds=e, mask=mask, n_prefill=8)
    real = mask.bool()
    assert (stepped - full)[real].abs().max() <= 1e-5


@torch.no_grad()
def test_static_cache_path_equals_sliced_path():
    # the CUDA-graph decode path (tensor positions, attention over the whole zero-initialised cache) on CPU
    m = tiny_model()
    x = torch.randint(0, 96, (2, 14))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, :4] = False
    cache = m.new_cache(2, 20)
    m(x[:, :8], attention_mask=mask[:, :8], cache=cache)
    steps = [m(x[:, t:t + 1], attention_mask=mask, cache=cache, start_pos=torch.tensor([t])) for t in range(8, 14)]
    full = m(x, attention_mask=mask[:, :14])[:, 8:]
    assert (torch.cat(steps, 1) - full)[mask[:, 8:14]].abs().max() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a GPU')
def test_cuda_graph_generate_equals_eager():
    m = tiny_model().cuda()
    x = torch.randint(0, 96, (2, 8), device='cuda')
    mask = torch.ones_like(x)
    mask[0, :3] = 0
    for kw in ({}, {'attention_mask': mask}):
        graph = m.generate(x, max_new_tokens=12, cuda_graph=True, **kw)
        assert torch.equal(graph, m.generate(x, max_new_tokens=12, **kw))


def test_training_after_generate():
    # generate() runs in inference mode and may build the cached RoPE table there; a later training step must not trip
    # over an inference tensor saved for backward
    m = tiny_model()
    x = torch.randint(0, 96, (2, 10))
    m.generate(x, max_new_tokens=3)
    _, loss = m.train()(x, targets=torch.roll(x, -1, 1))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@torch.no_grad()
def test_left_padded_row_equals_unpadded_row():
    m = tiny_model()
    a, b = torch.randint(3, 96, (1, 9)), torch.randint(3, 96, (1, 6))
    batch = torch.cat([a, torch.cat([torch.full((1, 3), 2), b], 1)])  # b left-padded with 3 x pad id 2
    mask = torch.ones_like(batch)
    mask[1, :3] = 0
    logits = m(batch, attention_mask=mask)
    assert (logits[1, 3:] - m(b)[0]).abs().max() <= 1e-5
    assert (logits[0] - m(a)[0]).abs().max() <= 1e-5
    out = m.generate(batch, max_new_tokens=10, attention_mask=mask)
    assert out.shape == (2, 19)
    assert torch.equal(out[1, 9:], m.generate(b, max_new_tokens=10)[0, 6:])
    assert torch.equal(out[0, 9:], m.generate(a, max_new_tokens=10)[0, 9:])
    # the embeddings path: row 1 = 3 pad slots (garbage values), an audio-like prefix, then text b
    prefix = torch.randn(2, 4, 64) * 0.5
    e = torch.stack([torch.cat([prefix[0], m.embed(a)[0]]), torch.cat([torch.randn(3, 64), prefix[1], m.embed(b)[0]])])
    emask = torch.tensor([[1] * 13, [0] * 3 + [1] * 10])
    got = m.generate(embeds=e, attention_mask=emask, max_new_tokens=8)
    alone = m.generate(embeds=torch.cat([prefix[1:], m.embed(b)], 1), max_new_tokens=8)
    assert torch.equal(got[1], alone[0])


@torch.no_grad()
def test_generate_embeds_returns_only_new_tokens():
    m = tiny_model()
    x = torch.randint(0, 96, (2, 8))
    with_tokens = m.generate(x, max_new_tokens=6)
    assert torch.equal(m.generate(embeds=m.embed(x), max_new_tokens=6), with_tokens[:, 8:])


@torch.no_grad()
def test_eos_stops_per_sequence():
    m = tiny_model()
    x = torch.randint(0, 96, (2, 8))
    free = m.generate(x, max_new_tokens=8)[:, 8:]
    eos = free[0, 2].item()  # row 0 hits this id at step 2 (or earlier)
    out = m.generate(x, max_new_tokens=8, eos_id=eos)[:, 8:]
    assert out.shape == (2, 8)
    first = (free[0] == eos).nonzero()[0].item()
    assert torch.equal(out[0, :first + 1], free[0, :first + 1]) and (out[0, first:] == eos).all()
    hit = (free[1] == eos).nonzero()
    stop = hit[0].item() if len(hit) else 8
    assert torch.equal(out[1, :stop], free[1, :stop])


@torch.no_grad()
def test_sampling():
    m = tiny_model()
    x = torch.randint(0, 96, (2, 5))
    greedy = m.generate(x, max_new_tokens=6)
    assert torch.equal(m.generate(x, max_new_tokens=6, temperature=1.0, top_p=1e-6), greedy)  # nucleus of one
    s1 = m.generate(x, max_new_tokens=6, temperature=2.0, generator=torch.Generator().manual_seed(0))
    s2 = m.generate(x, max_new_tokens=6, temperature=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and not torch.equal(s1, greedy)
    # top-p keeps only the most likely tokens whose mass reaches p
    logits = torch.tensor([[3.0, 2.0, 0.0, -1.0]])
    draws = torch.stack([llama.sample(logits, 1.0, 0.7, torch.Generator().manual_seed(i)) for i in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}


def test_loss_ignores_minus_one():
    m = tiny_model()
    x = torch.randint(0, 96, (2, 10))
    y = torch.randint(0, 96, (2, 10))
    y[:, :4] = -1
    logits, loss = m(x, targets=y)
    ref = F.cross_entropy(logits[:, 4:].reshape(-1, 96), y[:, 4:].reshape(-1))
    assert abs(loss.item() - ref.item()) < 1e-6


def test_loss_only_equals_full_loss_and_gradients():
    """loss_only=True runs the output layer on the target rows alone: the same loss and the same gradients."""
    m = tiny_model()
    x = torch.randint(0, 96, (3, 12))
    y = torch.full((3, 12), -1)
    y[0, 9:], y[1, 5:7], y[2, 11] = torch.randint(0, 96, (3,)), torch.randint(0, 96, (2,)), 7
    logits, full = m(x, targets=y)
    full.backward()
    g_full = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    none, short = m(x, targets=y, loss_only=True)
    short.backward()
    assert none is None and abs(full.item() - short.item()) < 1e-6
    for a, p in zip(g_full, m.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


# Meta's layout, written out from the LLaMA-2 reference code (llama/model.py of Meta's release), not from llama.py:
# every weight there is a fairscale model-parallel layer, and consolidated.0N.pth holds rank N's slice of it.
#   tok_embeddings: ParallelEmbedding(vocab, dim)       -> split along the embedding dim: weight dim 1
#   attention.wq/wk/wv: ColumnParallelLinear(dim, out)  -> split along the outputs: weight (out, in) dim 0
#   attention.wo: RowParallelLinear(in, dim)            -> split along the inputs: weight dim 1
#   feed_forward.w1/w3: ColumnParallelLinear (dim 0); feed_forward.w2: RowParallelLinear (dim 1)
#   output: ColumnParallelLinear(dim, vocab)            -> dim 0; the RMSNorm weights are whole on every rank
REFERENCE_SPLIT = {'tok_embeddings.weight': 1, 'output.weight': 0, 'attention.wq.weight': 0, 'attention.wk.weight': 0,
                   'attention.wv.weight': 0, 'attention.wo.weight': 1, 'feed_forward.w1.weight': 0,
                   'feed_forward.w3.weight': 0, 'feed_forward.w2.weight': 1}
HF_TO_META = {'model.embed_tokens.weight': 'tok_embeddings.weight', 'model.norm.weight': 'norm.weight',
              'lm_head.weight': 'output.weight', 'self_attn.q_proj.weight': 'attention.wq.weight',
              'self_attn.k_proj.weight': 'attention.wk.weight', 'self_attn.v_proj.weight': 'attention.wv.weight',
              'self_attn.o_proj.weight': 'attention.wo.weight', 'mlp.gate_proj.weight': 'feed_forward.w1.weight',
              'mlp.up_proj.weight': 'feed_forward.w3.weight', 'mlp.down_proj.weight': 'feed_forward.w2.weight',
              'input_layernorm.weight': 'attention_norm.weight', 'post_attention_layernorm.weight': 'ffn_norm.weight'}


def meta_rows(w, n_heads):
    """HF q/k rows -> Meta's. Meta rotates the pairs (2i, 2i+1) of each head, HF's rotate_half the pairs
    (i, i + head_dim / 2), both by the angle pos * theta^(-2i / head_dim): so Meta row 2i of a head is HF row i and
    Meta row 2i + 1 is HF row i + head_dim / 2 (written by index here, independently of llama.unpermute_qk)."""
    hd = w.shape[0] // n_heads
    order = [h * hd + (j // 2 if j % 2 == 0 else hd // 2 + j // 2) for h in range(n_heads) for j in range(hd)]
    return w[order]


def write_meta_by_reference_rules(hf_model, path, n_shards):
    cfg = hf_model.config
    full = {}
    for k, v in hf_model.state_dict().items():
        if 'rotary_emb' in k:
            continue
        parts = k.split('.')
        name = HF_TO_META[k] if k in HF_TO_META else f'layers.{parts[2]}.' + HF_TO_META['.'.join(parts[3:])]
        if name.endswith('attention.wq.weight'):
            v = meta_rows(v, cfg.num_attention_heads)
        elif name.endswith('attention.wk.weight'):
            v = meta_rows(v, cfg.num_key_value_heads)
        full[name] = v
    for rank in range(n_shards):
        shard = {'rope.freqs': torch.zeros(8)}  # Meta's files carry this buffer; loaders ignore it
        for name, v in full.items():
            dim = REFERENCE_SPLIT.get(name.split('.', 2)[-1] if name.startswith('layers.') else name)
            shard[name] = v.clone() if dim is None else v.chunk(n_shards, dim)[rank].clone()
        torch.save(shard, path / f'consolidated.{rank:02d}.pth')
    params = dict(dim=cfg.hidden_size, n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads,
                  n_kv_heads=cfg.num_key_value_heads, multiple_of=32, norm_eps=cfg.rms_norm_eps, vocab_size=-1)
    (path / 'params.json').write_text(json.dumps(params))


@pytest.mark.parametrize('n_shards', [1, 2])
def test_meta_checkpoint_by_reference_rules_matches_transformers(hf_pair, tmp_path, n_shards):
    """Meta shards made from the transformers model by the reference code's rules load to the same logits."""
    hf, _, _ = hf_pair
    write_meta_by_reference_rules(hf, tmp_path, n_shards)  # intermediate 192 = Meta's formula for dim 64, multiple_of 32
    m = load(tmp_path)
    x = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (m(x) - hf(x).logits).abs().max() <= 1e-4


def test_load_bf16_without_fp32_copy(hf_pair):
    _, ours, path = hf_pair
    m = load(path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
    x = torch.randint(0, 96, (1, 16))
    with torch.no_grad():
        assert (m(x).float() - ours(x)).abs().max() < 0.1


def test_loader_errors(tmp_path):
    hf = write_hf(tmp_path / 'src', n_kv_heads=2)
    cfg = json.loads((tmp_path / 'src' / 'config.json').read_text())
    good = {k: v.contiguous() for k, v in hf.state_dict().items()}

    def broken(name, sd):
        d = tmp_path / name
        d.mkdir()
        (d / 'config.json').write_text(json.dumps(cfg))
        save_file(sd, d / 'model.safetensors')
        with pytest.raises(CheckpointError) as e:
            load(d)
        return str(e.value)

    sd = dict(good)
    del sd['model.layers.1.mlp.up_proj.weight']
    assert "missing keys: ['layers.1.feed_forward.w3.weight']" in broken('missing', sd)
    sd = dict(good, **{'model.norm.weight': torch.ones(65)})
    assert 'wrong shapes: [\'norm.weight: expected (64,), got (65,)\']' in broken('shape', sd)
    sd = dict(good, **{'model.layers.0.self_attn.q_proj.bias': torch.zeros(64)})
    assert "unexpected keys: ['model.layers.0.self_attn.q_proj.bias']" in broken('unknown', sd)
    sd = dict(good, **{'model.layers.0.self_attn.rotary_emb.inv_freq': torch.zeros(8)})  # skipped silently
    d = tmp_path / 'inv_freq'
    d.mkdir()
    (d / 'config.json').write_text(json.dumps(cfg))
    save_file(sd, d / 'model.safetensors')
    load(d)


def test_lora_init_train_merge_save(tmp_path):
    m = tiny_model()
    x = torch.randint(0, 96, (4, 12))
    with torch.no_grad():
        base = m(x)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    apply_lora(m, rank=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        assert (m(x) - base).abs().max() == 0  # B starts at zero
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(('wq.lora_a', 'wq.lora_b', 'wv.lora_a', 'wv.lora_b')) for n in trainable)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    y = torch.roll(x, -1, 1)
    losses = []
    for _ in range(10):
        _, loss = m(x, targets=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    m.eval()
    assert losses[-1] < losses[0]
    after = m.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f'{k} changed'  # only LoRA weights moved
    lora = lora_state_dict(m)
    assert set(lora) == {f'layers.{i}.attention.{w}.lora_{ab}' for i in range(2) for w in ('wq', 'wv') for ab in 'ab'}
    torch.save(lora, tmp_path / 'lora.pt')
    with torch.no_grad():
        tuned = m(x)
        saved = torch.load(tmp_path / 'lora.pt', weights_only=True)
        fresh = load_lora(apply_lora(tiny_model(), rank=4, alpha=8), saved)
        assert (fresh(x) - tuned).abs().max() <= 1e-6
        merge_lora(m)
        assert not any(isinstance(mod, llama.LoRALinear) for mod in m.modules())
        assert (m(x) - tuned).abs().max() <= 1e-5
    with pytest.raises(ValueError, match='missing'):
        load_lora(apply_lora(tiny_model()), {})


def test_tokenizer_train_and_round_trip(tmp_path):
    texts = ['Where is the sound coming from?', 'left, front, below; 1.5m', 'Dog; Bark', 'Is the dog to the left of '
             'the piano?', 'Yes', 'No', 'right, behind, above; 10m', 'What sound events can you hear?'] * 20
    path = llama.train_tokenizer(texts, tmp_path / 'tok', vocab_size=400)
    tok = llama.Tokenizer(path)
    assert (tok.bos_id, tok.eos_id, tok.sp.unk_id(), tok.pad_id) == (1, 2, 0, 2)
    for s in ['left, front, below; 1.5m', 'Dog; Bark', 'a  b  ÄÖ ~{}']:  # last one: unseen chars via byte fallback
        ids = tok.encode(s, bos=True, eos=True)
        assert ids[0] == 1 and ids[-1] == 2 and max(ids) < tok.n_words
        assert tok.decode(ids) == s
    assert tok.decode(torch.tensor(tok.encode('Yes') + [tok.pad_id] * 3)) == 'Yes'


def test_model_args_defaults_are_llama2_7b():
    a = ModelArgs()
    got = (a.dim, a.n_layers, a.n_heads, a.vocab_size, a.ffn_hidden(), a.norm_eps)
    assert got == (4096, 32, 32, 32000, 11008, 1e-5)
    with torch.device('meta'):
        m = Transformer(a)
    assert m.num_params() == 6_738_415_616 and len(m.state_dict()) == 291
    assert math.isclose(a.rope_theta, 10000.0)


def test_lora_matches_peft(tmp_path):
    """Our LoRA (rank 4, alpha 8 on wq, wv) equals peft's LoraConfig on q_proj, v_proj of the same transformers
    model, weights copied by hand (q's B rows put in Meta's order with meta_rows): the scale alpha / r, where the
    update goes, and that A comes first."""
    import peft
    hf = write_hf(tmp_path, n_kv_heads=2)
    ours = apply_lora(load(tmp_path), rank=4, alpha=8, dropout=0.0)
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=['q_proj', 'v_proj'])).eval()
    own = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if 'lora_' not in name:
                continue
            p.normal_(0, 0.3)  # peft starts B at zero: make both halves count
            layer, proj, ab = re.search(r'layers\.(\d+)\.self_attn\.(q|v)_proj\.lora_(A|B)', name).groups()
            w = p
            if proj == 'q' and ab == 'B':
                w = meta_rows(p, hf.config.num_attention_heads)
            own[f'layers.{layer}.attention.w{proj}.lora_{ab.lower()}'].copy_(w)
    x = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (ours(x) - hf(input_ids=x).logits).abs().max() <= 1e-4
