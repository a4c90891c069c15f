"""
LLaMA-2 in one readable file: the model, a KV-cache generator, LoRA, checkpoint loading and the tokenizer.
BAT's language model; train_bat.py and eval.py import it, it has no command line of its own.

    from llama import ModelArgs, Transformer, load, Tokenizer, apply_lora
    model = load('Llama-2-7b-hf', device='cuda', dtype=torch.bfloat16)   # HF dir (config.json + safetensors)
    model = load('llama-2-7b', device='cuda', dtype=torch.bfloat16)      # Meta dir (params.json, consolidated.*.pth)
    out = model.generate(tokens, max_new_tokens=32)                      # greedy; (B, T + 32), prompt included
    apply_lora(model); ...train...; torch.save(lora_state_dict(model), p)  # LoRA on wq, wv; base frozen
    tok = Tokenizer(train_tokenizer(texts, 'out/tok', vocab_size=1024))  # SentencePiece, unk 0 / bos 1 / eos 2

Tests: python -m pytest -q tests/test_llama.py (CPU, ~15 s; parity with transformers' LlamaForCausalLM).
Speed: python bench/bench_llama.py (CPU, vs transformers); python bench/bench_llama.py --gpu --hf (7B-shaped, CUDA).

Conventions, chosen once and locked by tests/test_llama*.py:
- Parameter names are Meta's (tok_embeddings, layers.N.attention.wq, ..., norm, output), so a Meta checkpoint loads
  key for key. RoPE rotates interleaved pairs (dims 2j, 2j+1) as Meta does; the HF loader therefore un-permutes the
  rows of q_proj/k_proj (HF's conversion script permuted them for its rotate_half RoPE).
- Left padding: pad keys are masked out of attention and RoPE positions come from the attention mask (cumsum - 1), as
  transformers does, so a left-padded row gives the same logits as the same row unpadded. (RoPE only sees position
  differences, so the mask-derived positions change rounding only; they keep the HF comparison exact.)
- targets are already shifted (targets[b, t] is the token that should follow position t), ignore_index -1.
- Each TransformerBlock is its own module, so FSDP can wrap one block at a time
  (auto_wrap_policy = ModuleWrapPolicy({TransformerBlock}); with LoRA use use_orig_params=True).
"""
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    dim: int = 4096                # model width (LLaMA-2-7B)
    n_layers: int = 32
    n_heads: int = 32              # query heads; head_dim = dim // n_heads
    n_kv_heads: Optional[int] = None  # key/value heads (GQA); None = n_heads
    vocab_size: int = 32000
    multiple_of: int = 256         # FFN hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: Optional[float] = None
    hidden_dim: Optional[int] = None  # FFN hidden size given outright (HF intermediate_size); None = Meta's formula
    norm_eps: float = 1e-5         # LLaMA-2 value (LLaMA-1 used 1e-6)
    rope_theta: float = 10000.0
    max_seq_len: int = 4096        # RoPE table length; longer sequences grow the table on demand
    dropout: float = 0.0           # residual dropout, for training small models from scratch

    def ffn_hidden(self):
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * 4 * self.dim / 3)  # SwiGLU has 3 matrices: 2/3 of 4*dim keeps the parameter count of a 4x MLP
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)  # 11008 for 7B


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # statistics in fp32 even for a bf16 model (the mean of squares of 4096 bf16 values loses digits)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.type_as(x)


def rope_table(head_dim, n_pos, theta, device):
    """RoPE rotations as unit complex numbers, (n_pos, head_dim // 2) complex64: e^(i * pos * theta^(-2j/head_dim))."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(n_pos, device=device).float(), inv_freq)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x, rot):
    """Rotate interleaved pairs (x[2j], x[2j+1]) of x (B, T, H, hd) by rot (B or 1, T, 1, hd/2) from rope_table.
    Read as complex numbers x[2j] + i x[2j+1], the rotation is one complex multiply (Meta's formulation): a single
    kernel instead of four multiplies, an add, a subtract and a stack. Done in fp32 even for a bf16 model."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, T, H, hd/2) complex, a view for fp32
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.n_kv_heads or args.n_heads
        assert args.dim % args.n_heads == 0 and args.n_heads % self.n_kv_heads == 0
        self.head_dim = args.dim // args.n_heads
        self.wq = nn.Linear(args.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x, rot, mask, is_causal, cache=None, start_pos=0):
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.head_dim), rot)
        k = apply_rope(self.wk(x).view(B, T, self.n_kv_heads, self.head_dim), rot)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            cache_k, cache_v = cache
            if torch.is_tensor(start_pos):
                # static shapes (CUDA graph): write at tensor positions, attend over the whole cache; the mask hides
                # the slots not written yet
                cache_k.index_copy_(2, start_pos, k)
                cache_v.index_copy_(2, start_pos, v)
                k, v = cache_k, cache_v
            else:
                # the cache is preallocated for the whole call: write this chunk, attend over everything so far
                cache_k[:, :, start_pos:start_pos + T] = k
                cache_v[:, :, start_pos:start_pos + T] = v
                k, v = cache_k[:, :, :start_pos + T], cache_v[:, :, :start_pos + T]  # (B, n_kv, L, hs)
        if self.n_kv_heads != self.n_heads:
            # GQA: each kv head serves n_heads // n_kv_heads query heads (adjacent query heads share one)
            rep = self.n_heads // self.n_kv_heads
            k = k[:, :, None].expand(-1, -1, rep, -1, -1).flatten(1, 2)  # (B, nh, L, hs)
            v = v[:, :, None].expand(-1, -1, rep, -1, -1).flatten(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, args):
        super().__init__()
        hidden = args.ffn_hidden()
        self.w1 = nn.Linear(args.dim, hidden, bias=False)  # gate
        self.w2 = nn.Linear(hidden, args.dim, bias=False)  # down
        self.w3 = nn.Linear(args.dim, hidden, bias=False)  # up

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # SwiGLU


class TransformerBlock(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x, rot, mask, is_causal, cache=None, start_pos=0):
        x = x + self.dropout(self.attention(self.attention_norm(x), rot, mask, is_causal, cache, start_pos))
        return x + self.dropout(self.feed_forward(self.ffn_norm(x)))


class Transformer(nn.Module):
    block_class = TransformerBlock  # what FSDP wraps one at a time

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)  # not tied to tok_embeddings (as LLaMA-2)
        self._rope = None  # complex64 rope_table, built on first use on the input's device; not a buffer: never cast
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(('wo.weight', 'w2.weight')):  # GPT-2 style: residual projections scaled by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * args.n_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def embed(self, tokens):
        """(B, T) ids -> (B, T, dim) token embeddings, for callers that put an audio prefix in front."""
        return self.tok_embeddings(tokens)

    def rope(self, n_pos, device):
        if self._rope is None or self._rope.device != device or self._rope.shape[0] < n_pos:
            n = max(n_pos, self.args.max_seq_len)
            with torch.inference_mode(False):  # normal tensor even if built in generate(): autograd may save it
                self._rope = rope_table(self.args.dim // self.args.n_heads, n, self.args.rope_theta, device)
        return self._rope

    def forward(self, tokens=None, targets=None, embeds=None, attention_mask=None, cache=None, start_pos=0,
                last_only=False, loss_only=False):
        """
        tokens (B, T) ids, or embeds (B, T, dim) in their place. attention_mask (B, start_pos + T): 1 = real, 0 = pad
        (covers the cached positions too). cache/start_pos: KV cache from new_cache(), used by generate(); a tensor
        start_pos (the T positions to write) selects the static-shape path for CUDA graphs, where attention_mask
        spans the whole cache. Returns logits (B, T, V) (only the last position with last_only), or (logits, loss)
        when targets are given; with loss_only=True, (None, loss) computed on the target positions alone (training
        on short answers after long prompts: the output layer runs on a few rows instead of all B * T).
        """
        if (tokens is None) == (embeds is None):
            raise ValueError('give exactly one of tokens or embeds')
        h = self.tok_embeddings(tokens) if embeds is None else embeds.to(self.output.weight.dtype)
        B, T, _ = h.shape
        static = torch.is_tensor(start_pos)
        if static:
            assert cache is not None and attention_mask is not None, 'a tensor start_pos needs a cache and a mask'
        L = attention_mask.shape[1] if static else start_pos + T  # keys: whole cache (static) or everything so far
        table = self.rope(L, h.device)
        if attention_mask is None and (T == 1 or start_pos == 0):
            # no padding, nothing to hide: plain causal attention (a single new query may see every cached key), and
            # the positions are start_pos.. so the rotations are a slice of the table. The common decode step.
            rot, mask, is_causal = table[start_pos:start_pos + T], None, T > 1
        else:
            q_idx = start_pos if static else torch.arange(start_pos, start_pos + T, device=h.device)  # query positions
            if attention_mask is None:  # a chunk after cached tokens: causal with an offset
                real = torch.ones(B, L, dtype=torch.bool, device=h.device)
            else:
                assert attention_mask.shape == (B, L), f'attention_mask {tuple(attention_mask.shape)} != {(B, L)}'
                real = attention_mask.bool()
            pos = (real.long().cumsum(1) - 1).clamp(min=0)[:, q_idx]  # pads before the text don't count
            rot, mask, is_causal = table[pos], self._mask(real, q_idx), False
        rot = rot.unsqueeze(-2)  # (B or 1, T, 1, hd/2): the same rotation for every head
        for i, layer in enumerate(self.layers):
            h = layer(h, rot, mask, is_causal, None if cache is None else cache[i], start_pos)
        if targets is None and last_only:  # generating: only the last position's logits are needed
            h = h[:, -1:]
        if targets is not None and loss_only:
            keep = targets != -1  # (B, T)
            logits = self.output(self.norm(h[keep]))  # (n_targets, V)
            return None, F.cross_entropy(logits.float(), targets[keep])
        logits = self.output(self.norm(h))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @staticmethod
    def _mask(real, q_idx):
        """Boolean (B, 1, T, L): causal, pad keys hidden; each query may always see itself so pad rows are no NaN."""
        q_idx = q_idx[:, None]                                      # (T, 1) absolute positions of the queries
        k_idx = torch.arange(real.shape[1], device=real.device)[None, :]  # (1, L)
        allowed = (k_idx <= q_idx) & real[:, None, :]               # (B, T, L)
        return (allowed | (k_idx == q_idx))[:, None]

    def new_cache(self, batch_size, max_len, device=None, dtype=None):
        """Preallocated KV cache: per layer (k, v), each (B, n_kv_heads, max_len, head_dim). Zeros, not empty: the
        static path multiplies unwritten slots by zero attention weights, and 0 * NaN garbage would be NaN."""
        a = self.args
        w = self.output.weight
        shape = (batch_size, a.n_kv_heads or a.n_heads, max_len, a.dim // a.n_heads)
        return [(torch.zeros(shape, device=device or w.device, dtype=dtype or w.dtype),
                 torch.zeros(shape, device=device or w.device, dtype=dtype or w.dtype)) for _ in range(a.n_layers)]

    @torch.inference_mode()
    def generate(self, tokens=None, max_new_tokens=32, temperature=0.0, top_p=1.0, embeds=None, attention_mask=None,
                 eos_id=-1, generator=None, cuda_graph=False):
        """
        Greedy at temperature 0, else temperature + top-p sampling. Prompts are left-padded with attention_mask
        (B, T) marking real positions. With tokens: returns (B, T + max_new_tokens), prompt included; with embeds:
        returns only the new tokens (B, max_new_tokens). A row that emitted eos_id keeps emitting eos_id; when all
        rows are done the loop stops early and the rest is filled with eos_id (the width never changes).
        cuda_graph=True replays the one-token decode step from a CUDA graph (no Python launch overhead; CUDA only).
        Call model.eval() first (generate does not change the dropout mode).
        """
        x = tokens if embeds is None else embeds
        B, T = x.shape[:2]
        dev = x.device
        mask = None
        if attention_mask is not None and not bool(attention_mask.bool().all()):  # all-ones masks take the fast path
            mask = torch.cat([attention_mask.bool(), torch.ones(B, max_new_tokens, dtype=torch.bool, device=dev)], 1)
        cache = self.new_cache(B, T + max_new_tokens, device=dev)
        logits = self(tokens=tokens, embeds=embeds, attention_mask=None if mask is None else mask[:, :T],
                      cache=cache, last_only=True)
        step = self._graph_step(cache, mask, B, T) if cuda_graph else None
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        out = torch.full((B, max_new_tokens), eos_id, dtype=torch.long, device=dev)
        for i in range(max_new_tokens):
            nxt = sample(logits[:, -1], temperature, top_p, generator)
            if eos_id >= 0:
                nxt = torch.where(done, eos_id, nxt)
                done |= nxt == eos_id
            out[:, i] = nxt
            if i == max_new_tokens - 1 or (eos_id >= 0 and bool(done.all())):
                break
            if step is not None:
                logits = step(nxt, T + i)
            else:
                logits = self(tokens=nxt[:, None], attention_mask=None if mask is None else mask[:, :T + i + 1],
                              cache=cache, start_pos=T + i, last_only=True)
        return out if tokens is None else torch.cat([tokens, out], dim=1)

    def _graph_step(self, cache, mask, B, T):
        """Capture one decode step (static shapes: tensor position, whole-cache mask) in a CUDA graph; returns
        step(tokens (B,), position) -> logits (B, 1, V), replaying the graph."""
        dev = cache[0][0].device
        assert dev.type == 'cuda', 'cuda_graph=True needs the model on a CUDA device'
        full = mask if mask is not None else torch.ones(B, cache[0][0].shape[2], dtype=torch.bool, device=dev)
        tok = torch.zeros(B, 1, dtype=torch.long, device=dev)
        pos = torch.full((1,), T, dtype=torch.long, device=dev)
        run = lambda: self(tokens=tok, attention_mask=full, cache=cache, start_pos=pos, last_only=True)
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            run()  # warm-up outside the graph (cuBLAS workspaces); its write to slot T is redone by the first step
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = run()

        def step(nxt, position):
            tok.copy_(nxt[:, None])
            pos.fill_(position)
            graph.replay()
            return logits
        return step


def sample(logits, temperature=0.0, top_p=1.0, generator=None):
    """(B, V) logits -> (B,) ids: argmax at temperature 0, else sample from the smallest set with mass >= top_p."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        p_sorted, idx = probs.sort(dim=-1, descending=True)
        drop = p_sorted.cumsum(-1) - p_sorted > top_p  # mass before this token already reaches top_p
        p_sorted = p_sorted.masked_fill(drop, 0.0)
        choice = torch.multinomial(p_sorted / p_sorted.sum(-1, keepdim=True), 1, generator=generator)
        return idx.gather(-1, choice)[:, 0]
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# -----------------------------------------------------------------------------
# LoRA: W x + (alpha / r) B A dropout(x), A (r, in) random, B (out, r) zero so training starts at the base model

class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank, alpha, dropout):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # same Parameter and key ('...wq.weight'), so base checkpoints still load
        dev = base.weight.device
        # fp32 LoRA weights even on a bf16 base: they are what the optimizer updates
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=torch.float32))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        y = F.linear(x, self.weight)
        z = F.linear(F.linear(self.dropout(x).to(self.lora_a.dtype), self.lora_a), self.lora_b)
        return y + (self.scale * z).to(y.dtype)

    def delta(self):
        return self.scale * (self.lora_b @ self.lora_a)  # (out, in)


def _lora_modules(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def apply_lora(model, rank=8, alpha=32, dropout=0.05, targets=('wq', 'wv')):
    """Freeze every base weight and put LoRA on the linears whose last name is in targets. Returns the model."""
    if _lora_modules(model):
        raise ValueError('apply_lora: the model already has LoRA')
    for p in model.parameters():
        p.requires_grad_(False)
    hits = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                lora = LoRALinear(child, rank, alpha, dropout).train(child.training)  # keep the model's train/eval mode
                setattr(module, child_name, lora)
                hits.append(f'{name}.{child_name}')
    if not hits:
        raise ValueError(f'apply_lora: no nn.Linear named any of {targets}')
    return model


def lora_state_dict(model):
    """Only the LoRA weights (keys '...wq.lora_a' / '...wq.lora_b'), detached copies, to save next to a base name."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.rsplit('.', 1)[-1] in ('lora_a', 'lora_b')}


def load_lora(model, state):
    """Copy a lora_state_dict() into a model that went through apply_lora with the same targets and rank."""
    own = lora_state_dict(model)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [f'{k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)}'
           for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f'load_lora: missing {missing}; unexpected {unexpected}; wrong shapes {bad}')
    model.load_state_dict(state, strict=False)
    return model


# peft's names of a LoRA on a Hugging Face LLaMA, as SLAM-LLM saves it (llm. + PeftModel state dict), e.g.
# llm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight  (r, in)   -> layers.0.attention.wq.lora_a
PEFT_LORA = re.compile(r'(?:llm\.)?base_model\.model\.model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.\w+_proj)'
                       r'\.lora_([AB])\.(\w+)\.weight')


def peft_lora_shape(state, where='checkpoint'):
    """(rank, our target names) of the peft LoRA tensors in state (rank 0 if there are none); any other key is an
    error naming it."""
    bad = [k for k in state if not PEFT_LORA.fullmatch(k)]
    if bad:
        raise CheckpointError(f'{where}: keys that are neither projector nor peft LoRA weights: {bad[:8]}')
    names = sorted({HF_LAYER[PEFT_LORA.fullmatch(k).group(2)].split('.')[-1] for k in state})
    ranks = {v.shape[0] for k, v in state.items() if PEFT_LORA.fullmatch(k).group(3) == 'A'}
    if len(ranks) > 1:
        raise CheckpointError(f'{where}: LoRA ranks differ between layers: {sorted(ranks)}')
    return (ranks.pop() if ranks else 0), tuple(names)


def load_peft_lora(model, state, where='checkpoint'):
    """Copy peft LoRA tensors (Hugging Face names) into a model that went through apply_lora with the same targets
    and rank. lora_B of q_proj / k_proj gets the same row un-permutation as the base weights (load_hf), so that
    B A stays the update of our (Meta-order) wq / wk."""
    ours = {}
    for k, v in state.items():
        m = PEFT_LORA.fullmatch(k)
        if not m:
            raise CheckpointError(f'{where}: {k} is not a peft LoRA weight')
        layer, hf_name, ab = m.group(1), m.group(2), m.group(3)
        name = HF_LAYER[hf_name]
        if ab == 'B' and name.endswith(('wq', 'wk')):
            a = model.args
            v = unpermute_qk(v, a.n_heads if name.endswith('wq') else (a.n_kv_heads or a.n_heads))
        ours[f'layers.{layer}.{name}.lora_{ab.lower()}'] = v
    return load_lora(model, ours)


@torch.no_grad()
def merge_lora(model):
    """Fold every LoRA update into its base weight and put plain nn.Linear back (inference: no extra matmuls)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                lin = nn.Linear(child.in_features, child.out_features, bias=False, device='meta')
                child.weight += child.delta().to(child.weight.dtype)
                lin.weight = child.weight
                setattr(module, child_name, lin)
    return model


# -----------------------------------------------------------------------------
# checkpoint loading: Hugging Face layout (config.json + safetensors) or Meta's (params.json + consolidated.*.pth)

class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: message lists missing keys, unexpected keys and wrong shapes."""


HF_TOP = {'model.embed_tokens.weight': 'tok_embeddings.weight', 'model.norm.weight': 'norm.weight',
          'lm_head.weight': 'output.weight'}
HF_LAYER = {'self_attn.q_proj': 'attention.wq', 'self_attn.k_proj': 'attention.wk', 'self_attn.v_proj': 'attention.wv',
            'self_attn.o_proj': 'attention.wo', 'mlp.gate_proj': 'feed_forward.w1', 'mlp.down_proj': 'feed_forward.w2',
            'mlp.up_proj': 'feed_forward.w3', 'input_layernorm': 'attention_norm',
            'post_attention_layernorm': 'ffn_norm'}


def hf_to_meta_key(k):
    """'model.layers.3.self_attn.q_proj.weight' -> 'layers.3.attention.wq.weight'; None if it is not a LLaMA key."""
    if k in HF_TOP:
        return HF_TOP[k]
    m = re.fullmatch(r'model\.layers\.(\d+)\.(.+)\.weight', k)
    if m and m.group(2) in HF_LAYER:
        return f'layers.{m.group(1)}.{HF_LAYER[m.group(2)]}.weight'
    return None


def permute_qk(w, n_heads):
    """Meta (interleaved pairs) -> HF (rotate_half) row order inside each head, as HF's conversion script does."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def unpermute_qk(w, n_heads):
    """HF -> Meta row order: the inverse of permute_qk."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def args_from_hf_config(cfg, where='config.json'):
    for key, ok in (('hidden_act', 'silu'), ('attention_bias', False), ('mlp_bias', False)):
        if cfg.get(key, ok) != ok:
            raise CheckpointError(f'{where}: {key}={cfg[key]!r} is not supported (LLaMA-2 has {ok!r})')
    rope = cfg.get('rope_scaling') or {}
    if rope.get('rope_type', rope.get('type', 'default')) != 'default':
        raise CheckpointError(f'{where}: rope scaling {rope} is not supported')
    theta = cfg.get('rope_theta') or (cfg.get('rope_parameters') or {}).get('rope_theta', 10000.0)
    args = ModelArgs(dim=cfg['hidden_size'], n_layers=cfg['num_hidden_layers'], n_heads=cfg['num_attention_heads'],
                     n_kv_heads=cfg.get('num_key_value_heads') or cfg['num_attention_heads'],
                     vocab_size=cfg['vocab_size'], hidden_dim=cfg['intermediate_size'],
                     norm_eps=cfg.get('rms_norm_eps', 1e-6), rope_theta=float(theta),
                     max_seq_len=cfg.get('max_position_embeddings', 4096))
    head_dim = cfg.get('head_dim') or args.dim // args.n_heads
    if head_dim * args.n_heads != args.dim:
        raise CheckpointError(f'{where}: head_dim {head_dim} * {args.n_heads} heads != hidden_size {args.dim}')
    return args


def _empty_model(args, device, dtype):
    """Model with uninitialised weights straight in dtype on device: no fp32 copy of a 7B model is ever made."""
    with torch.device('meta'):
        model = Transformer(args)
    model = model.to(dtype=dtype).to_empty(device=device)
    if torch.device(device).type == 'cpu':
        # Store the (vocab, dim) output matrix transposed in memory (column-major strides; same shape, same values once
        # loaded): the largest matrix a decode step reads, and MKL's matrix-vector and few-row products stream it
        # ~1.6x faster that way on CPU (~1.3x at 8 rows). Not done for the other matrices: there the row-major layout
        # wins at batch 8, or they are already fast. F.linear takes either layout; nothing else changes.
        w = model.output.weight
        model.output.weight.data = torch.empty_strided(w.shape, (1, w.shape[0]), dtype=w.dtype, device=w.device)
    return model


def _check(path, model, shapes):
    """shapes: {our key: checkpoint shape}. One CheckpointError listing every problem, before any tensor is read."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    wrong = [f'{k}: expected {own[k]}, got {tuple(s)}' for k, s in shapes.items() if k in own and tuple(s) != own[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(f'{path} does not fit {model.args}:\n  missing keys: {missing}\n'
                              f'  unexpected keys: {unexpected}\n  wrong shapes: {wrong}')


def load_hf(path, device='cpu', dtype=torch.float32):
    from safetensors import safe_open
    path = Path(path)
    cfg = json.loads((path / 'config.json').read_text())
    args = args_from_hf_config(cfg, path / 'config.json')
    index = path / 'model.safetensors.index.json'
    if index.exists():
        weight_map = json.loads(index.read_text())['weight_map']  # key -> shard file name
    elif (path / 'model.safetensors').exists():
        with safe_open(path / 'model.safetensors', framework='pt') as f:
            weight_map = {k: 'model.safetensors' for k in f.keys()}
    else:
        raise CheckpointError(f'{path}: no model.safetensors or model.safetensors.index.json')
    # our key -> (file, hf key), skipping RoPE buffers we recompute; unknown keys keep their name to be reported
    plan = {}
    for k, fname in weight_map.items():
        if k.endswith('rotary_emb.inv_freq'):
            continue
        plan[hf_to_meta_key(k) or k] = (fname, k)
    if cfg.get('tie_word_embeddings') and 'output.weight' not in plan and 'tok_embeddings.weight' in plan:
        plan['output.weight'] = plan['tok_embeddings.weight']  # tied checkpoints store the matrix once
    model = _empty_model(args, device, dtype)
    by_file = {}
    for ours, (fname, k) in plan.items():
        by_file.setdefault(fname, []).append((ours, k))
    shapes = {}
    for fname, items in by_file.items():
        with safe_open(path / fname, framework='pt') as f:
            have = set(f.keys())
            for ours, k in items:
                if k not in have:
                    raise CheckpointError(f'{path / fname}: index names {k} but the file does not hold it')
                shapes[ours] = f.get_slice(k).get_shape()
    _check(path, model, shapes)
    params = model.state_dict()
    n_kv = args.n_kv_heads or args.n_heads
    with torch.no_grad():
        for fname, items in by_file.items():
            with safe_open(path / fname, framework='pt') as f:  # lazy: one tensor in memory at a time
                for ours, k in items:
                    w = f.get_tensor(k)
                    if ours.endswith('attention.wq.weight'):
                        w = unpermute_qk(w, args.n_heads)
                    elif ours.endswith('attention.wk.weight'):
                        w = unpermute_qk(w, n_kv)
                    params[ours].copy_(w)  # casts to dtype and moves to device in one go
    return model.eval()


# Meta model-parallel shards: which dimension each weight was split along (fairscale Column/Row/Embedding layers)
META_SPLIT = {'tok_embeddings': 1, 'wq': 0, 'wk': 0, 'wv': 0, 'wo': 1, 'w1': 0, 'w3': 0, 'w2': 1, 'output': 0}


def load_meta(path, device='cpu', dtype=torch.float32):
    path = Path(path)
    params = json.loads((path / 'params.json').read_text())
    known = {f.name for f in fields(ModelArgs)}
    if set(params) - known:
        raise CheckpointError(f'{path / "params.json"}: unsupported fields {sorted(set(params) - known)}')
    files = sorted(path.glob('consolidated.*.pth'))
    if not files:
        raise CheckpointError(f'{path}: no consolidated.*.pth')
    shards = []
    for f in files:
        try:
            shards.append(torch.load(f, map_location='cpu', weights_only=True, mmap=True))
        except RuntimeError:  # old (non-zip) torch.save format cannot be memory-mapped
            shards.append(torch.load(f, map_location='cpu', weights_only=True))
    shards = [{k: v for k, v in s.items() if k != 'rope.freqs'} for s in shards]
    if params.get('vocab_size', -1) <= 0:  # Meta writes -1: the tokenizer decides; read it off the embedding
        params['vocab_size'] = shards[0]['tok_embeddings.weight'].shape[0]
    model = _empty_model(ModelArgs(**params), device, dtype)

    def joined(k):  # undo model parallelism; norms are replicated on every shard
        if len(shards) == 1:
            return shards[0][k]
        dim = META_SPLIT.get(k.split('.')[-2])
        return shards[0][k] if dim is None else torch.cat([s[k] for s in shards], dim=dim)

    shapes = {}
    for k, v in shards[0].items():
        dim = META_SPLIT.get(k.split('.')[-2])
        shape = list(v.shape)
        if dim is not None and len(shards) > 1:
            shape[dim] = sum(s[k].shape[dim] for s in shards)
        shapes[k] = tuple(shape)
    _check(path, model, shapes)
    own = model.state_dict()
    with torch.no_grad():
        for k in shapes:
            own[k].copy_(joined(k))  # Meta order already matches our interleaved RoPE: no permutation
    return model.eval()


def load(path, device='cpu', dtype=torch.float32):
    """A Hugging Face layout dir (config.json) or a Meta dir (params.json); returns the model in eval mode."""
    path = Path(path)
    if (path / 'config.json').exists():
        return load_hf(path, device, dtype)
    if (path / 'params.json').exists():
        return load_meta(path, device, dtype)
    raise CheckpointError(f'{path}: neither config.json (Hugging Face) nor params.json (Meta) found')


# -----------------------------------------------------------------------------
# tokenizer

class Tokenizer:
    """
    SentencePiece with LLaMA's ids: unk 0, bos 1, eos 2. LLaMA has no pad piece, so pad_id = the model's pad id if it
    has one, else eos_id (2): padded positions must be masked (attention_mask 0, targets -1) anyway, and eos decodes
    to nothing, so a padded row still decodes cleanly.
    """

    def __init__(self, model_path):
        import sentencepiece as spm
        self.model_path = str(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_path)
        self.n_words = self.sp.vocab_size()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id

    def encode(self, s, bos=True, eos=False):
        return ([self.bos_id] if bos else []) + self.sp.encode(s) + ([self.eos_id] if eos else [])

    def decode(self, ids):
        if torch.is_tensor(ids):
            ids = ids.tolist()
        return self.sp.decode([int(i) for i in ids if 0 <= int(i) < self.n_words])


def train_tokenizer(texts, model_prefix, vocab_size=1024, model_type='bpe'):
    """
    Train a SentencePiece model with LLaMA's special ids on texts (an iterable of strings); returns the .model path.
    The vocabulary is a soft limit (a tiny corpus may give fewer pieces). Every character of the corpus is kept
    (character_coverage 1.0) and, when the vocabulary has room for the 256 byte pieces, byte_fallback makes any
    other text round-trip too. No normalisation, whitespace kept: decode(encode(s)) == s for answers.
    """
    import sentencepiece as spm
    texts = [t for t in texts if t]
    n_chars = len(set(''.join(texts)))
    Path(model_prefix).parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(model_prefix), vocab_size=vocab_size, model_type=model_type,
        character_coverage=1.0, byte_fallback=vocab_size >= 256 + 3 + n_chars + 64, hard_vocab_limit=False,
        normalization_rule_name='identity', remove_extra_whitespaces=False, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return f'{model_prefix}.model'
