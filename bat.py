"""
The BAT model pieces shared by train_bat.py, eval.py and sample.py:
- `QFormer`: a hand-written BLIP-2 Q-Former (learned queries, self-attention, cross-attention to the encoder
  tokens every 2nd layer, post-LayerNorm BERT layers; the same function as transformers' Blip2QFormerModel, tested)
  + Linear(hidden -> LLM dim) + LayerNorm, as the released SLAM-LLM recipe (8 layers, 64 queries, hidden 768,
  12 heads, FFN 3072 -> 64 audio tokens);
- `PoolProjector`: the plain linear / MLP projector for ablation (encoder tokens pooled to n_query tokens);
- the prompt template, and `collate` which lays out a batch as
  [left pads][audio prefix][BOS + prompt][answer + EOS][right pads] with targets only on answer + EOS;
- `BAT`: projector + LLM, turning encoder tokens into the audio prefix; loss and (greedy or beam) answering;
- `encoder_tokens`: the frozen encoder's token sequence per QA item, computed once in batches and cached on disk;
- `load_bat`: rebuild a trained model from a train_bat.py checkpoint, or from the released SLAM-LLM BAT `model.pt`
  (Q-Former under Blip2QFormerModel names + peft LoRA names, see `load_slam`) on a Spatial-AST and a LLaMA-2 dir.
Nothing runs on import.
"""
import hashlib
import json
import os
from dataclasses import dataclass, asdict, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

PROMPT = ("Based on the audio you've heard, refer to the instruction and provide a response.\n\n"
          "### Instruction:\n{question}\n\n### Response:")


def format_prompt(question):
    return PROMPT.format(question=question.strip())

# -----------------------------------------------------------------------------
# projectors

@dataclass
class QFormerArgs:
    n_layers: int = 8         # released recipe: num_hidden_layers=8
    n_query: int = 64         # learned query tokens = audio tokens fed to the LLM
    dim: int = 768            # Q-Former hidden size
    n_heads: int = 12
    ffn_dim: int = 3072
    cross_every: int = 2      # cross-attention in layers 0, 2, 4, ... (BLIP-2 cross_attention_frequency)
    encoder_dim: int = 768    # Spatial-AST token width
    llm_dim: int = 4096       # LLaMA-2-7B
    dropout: float = 0.1      # BERT defaults: hidden and attention dropout 0.1
    eps: float = 1e-12        # BERT LayerNorm eps inside the Q-Former
    projector: str = 'qformer'  # 'qformer' (released recipe) | 'linear' | 'mlp' (ablation: pooled encoder tokens)


class Attention(nn.Module):
    """Multi-head attention from x (B, T, dim) to a memory (B, S, kv_dim) (x itself for self-attention)."""

    def __init__(self, dim, n_heads, kv_dim, dropout):
        super().__init__()
        assert dim % n_heads == 0
        self.n_heads, self.dropout = n_heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim, dim)
        self.value = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, memory):
        B, T, C = x.shape
        S = memory.shape[1]
        q = self.query(x).view(B, T, self.n_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(memory).view(B, S, self.n_heads, -1).transpose(1, 2)  # (B, nh, S, hs)
        v = self.value(memory).view(B, S, self.n_heads, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, C))  # (B, T, dim)


class QFormerLayer(nn.Module):
    """One post-LN BERT layer on the queries: self-attention, [cross-attention to the audio], FFN."""

    def __init__(self, a: QFormerArgs, cross):
        super().__init__()
        self.self_attn = Attention(a.dim, a.n_heads, a.dim, a.dropout)
        self.self_norm = nn.LayerNorm(a.dim, eps=a.eps)
        self.cross_attn = Attention(a.dim, a.n_heads, a.encoder_dim, a.dropout) if cross else None
        self.cross_norm = nn.LayerNorm(a.dim, eps=a.eps) if cross else None
        self.ffn = nn.Sequential(nn.Linear(a.dim, a.ffn_dim), nn.GELU(), nn.Linear(a.ffn_dim, a.dim))
        self.ffn_norm = nn.LayerNorm(a.dim, eps=a.eps)
        self.drop = nn.Dropout(a.dropout)

    def forward(self, q, audio):
        q = self.self_norm(q + self.drop(self.self_attn(q, q)))
        if self.cross_attn is not None:
            q = self.cross_norm(q + self.drop(self.cross_attn(q, audio)))
        return self.ffn_norm(q + self.drop(self.ffn(q)))


class QFormer(nn.Module):
    """Encoder tokens (B, S, encoder_dim) -> audio prefix (B, n_query, llm_dim)."""

    def __init__(self, a: QFormerArgs):
        super().__init__()
        self.args = a
        self.query_tokens = nn.Parameter(torch.randn(1, a.n_query, a.dim))  # N(0, 1) as the released recipe
        # no norm on the encoder tokens: the released Q-Former (transformers' Blip2QFormerModel) reads them as they are
        self.query_norm = nn.LayerNorm(a.dim, eps=a.eps)
        self.drop = nn.Dropout(a.dropout)
        self.layers = nn.ModuleList(QFormerLayer(a, cross=(i % a.cross_every == 0)) for i in range(a.n_layers))
        self.proj = nn.Linear(a.dim, a.llm_dim)
        self.proj_norm = nn.LayerNorm(a.llm_dim, eps=1e-5)

    def forward(self, audio):
        q = self.drop(self.query_norm(self.query_tokens.expand(audio.shape[0], -1, -1)))  # (B, n_query, dim)
        for layer in self.layers:
            q = layer(q, audio)
        return self.proj_norm(self.proj(q))  # (B, n_query, llm_dim)


class PoolProjector(nn.Module):
    """Ablation: average-pool the encoder tokens to n_query tokens, then Linear (or 2-layer MLP) + LayerNorm."""

    def __init__(self, a: QFormerArgs):
        super().__init__()
        self.args = a
        if a.projector == 'mlp':
            self.proj = nn.Sequential(nn.Linear(a.encoder_dim, a.dim), nn.GELU(), nn.Linear(a.dim, a.llm_dim))
        else:
            self.proj = nn.Linear(a.encoder_dim, a.llm_dim)
        self.proj_norm = nn.LayerNorm(a.llm_dim, eps=1e-5)
        self.audio_norm = nn.LayerNorm(a.encoder_dim)

    def forward(self, audio):
        audio = self.audio_norm(audio)
        pooled = F.adaptive_avg_pool1d(audio.transpose(1, 2), self.args.n_query).transpose(1, 2)  # (B, n_query, enc)
        return self.proj_norm(self.proj(pooled))


def make_projector(a: QFormerArgs):
    assert a.projector in ('qformer', 'linear', 'mlp'), f"projector must be qformer|linear|mlp, got {a.projector!r}"
    return QFormer(a) if a.projector == 'qformer' else PoolProjector(a)

# -----------------------------------------------------------------------------
# batches

def collate(prompts, answers, n_prefix, pad_id):
    """Lay out one batch. prompts: lists of ids (BOS + template); answers: lists of ids (answer + EOS), or None
    for generation. Returns tokens (B, T) (pad_id on pads and audio slots), audio_mask (B, T) bool (where the
    projector output goes), attention_mask (B, T) (1 = real), targets (B, T) (next token on answer + EOS, -1 elsewhere).
    Prompts are left-padded so every answer starts in the same column; answers are right-padded."""
    B = len(prompts)
    answers = answers if answers is not None else [[] for _ in range(B)]
    P, A = max(len(p) for p in prompts), max(len(a) for a in answers)
    T = P + n_prefix + A
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    audio_mask = torch.zeros(B, T, dtype=torch.bool)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    targets = torch.full((B, T), -1, dtype=torch.long)
    start = P + n_prefix  # column of the first answer token, the same for all items
    for i, (p, a) in enumerate(zip(prompts, answers)):
        left = P - len(p)
        audio_mask[i, left:left + n_prefix] = True
        tokens[i, left + n_prefix:start] = torch.tensor(p, dtype=torch.long)
        if a:
            tokens[i, start:start + len(a)] = torch.tensor(a, dtype=torch.long)
            targets[i, start - 1:start - 1 + len(a)] = tokens[i, start:start + len(a)]  # position t predicts t+1
        attention_mask[i, left:start + len(a)] = 1
    return {'tokens': tokens, 'audio_mask': audio_mask, 'attention_mask': attention_mask, 'targets': targets}


def batch_to(batch, device):
    return {k: v.to(device) for k, v in batch.items()}

# -----------------------------------------------------------------------------
# the model

class BAT(nn.Module):
    """Projector + LLM. The (frozen) encoder lives outside: it runs once per item (see encoder_tokens)."""

    def __init__(self, projector, llm):
        super().__init__()
        self.projector, self.llm = projector, llm

    def embeds(self, audio, batch):
        """Token embeddings with the audio prefix written into the audio slots. audio: (B, S, encoder_dim)."""
        emb = self.llm.embed(batch['tokens'])  # (B, T, llm_dim)
        prefix = self.projector(audio.to(emb.dtype))  # (B, n_query, llm_dim)
        return emb.masked_scatter(batch['audio_mask'].unsqueeze(-1), prefix.to(emb.dtype))

    def forward(self, audio, batch):
        """Returns the mean loss over answer + EOS tokens."""
        _, loss = self.llm(embeds=self.embeds(audio, batch), targets=batch['targets'],
                           attention_mask=batch['attention_mask'], loss_only=True)
        return loss

    @torch.no_grad()
    def answer(self, audio, prompts, pad_id, eos_id, max_new_tokens=32, beams=1):
        """Greedy (KV cache, batched) or beam answers: a list of id lists, cut at the first EOS."""
        if beams > 1:
            return [self._beam(audio[i:i + 1], prompts[i], pad_id, eos_id, max_new_tokens, beams)
                    for i in range(len(prompts))]
        batch = batch_to(collate(prompts, None, self.projector.args.n_query, pad_id), audio.device)
        out = self.llm.generate(embeds=self.embeds(audio, batch), attention_mask=batch['attention_mask'],
                                max_new_tokens=max_new_tokens, temperature=0.0, eos_id=eos_id)  # (B, new)
        return [cut_at_eos(row, eos_id) for row in out.tolist()]

    def _beam(self, audio, prompt, pad_id, eos_id, max_new_tokens, beams):
        """Plain beam search for one item (the released recipe decodes with num_beams=4, batch 1); no KV cache:
        each step re-runs the whole prefix, which is fine at eval sizes."""
        batch = batch_to(collate([prompt], None, self.projector.args.n_query, pad_id), audio.device)
        base = self.embeds(audio, batch)  # (1, T, dim)
        live = [([], 0.0)]  # (ids, sum log-prob)
        done = []
        for _ in range(max_new_tokens):
            ids = torch.tensor([seq for seq, _ in live], dtype=torch.long, device=audio.device)  # (k, t)
            emb = torch.cat([base.expand(len(live), -1, -1), self.llm.embed(ids)], 1) if ids.shape[1] else base
            logp = F.log_softmax(self.llm(embeds=emb)[:, -1].float(), -1)  # (k, V)
            cand = [(s + logp[j, t].item(), j, t) for j, (_, s) in enumerate(live)
                    for t in torch.topk(logp[j], beams).indices.tolist()]
            live = []
            for s, j, t in sorted(cand, reverse=True)[:beams]:
                (done if t == eos_id else live).append((live_seq(j, t, ids), s))
            if not live or (len(done) >= beams):
                break
        best = max(done + live, key=lambda x: x[1] / max(len(x[0]), 1))
        return [t for t in best[0] if t != eos_id]


def live_seq(j, t, ids):
    return ids[j].tolist() + [t] if ids.shape[1] else [t]


def cut_at_eos(ids, eos_id):
    return ids[:ids.index(eos_id)] if eos_id in ids else ids

# -----------------------------------------------------------------------------
# the frozen encoder's tokens, once per distinct (clip, IR) pair, cached on disk

def audio_key(r):
    return (r.get('audio_id'), r.get('reverb_id'), r.get('audio_id2'), r.get('reverb_id2'))


def file_stamp(path):
    st = os.stat(path)
    return f'{os.path.abspath(path)}:{st.st_size}:{int(st.st_mtime)}'


@torch.no_grad()
def encode_waveforms(encoder, wav):
    """(B, 2, N) binaural waveforms -> (B, S, dim) encoder tokens (spatial_ast.SpatialAST.tokens)."""
    from features import binaural_features
    return encoder.tokens(binaural_features(wav))


def encoder_tokens(records, encoder, encoder_ckpt, audio_root, reverb_root, cache_dir, device,
                   clip_seconds=10.0, batch_size=16, sample_rate=32000, log=print, pad='loop'):
    """Returns (tokens (U, S, dim) float16 on CPU, index (len(records),) long into it). U = distinct audio pairs.
    Cached in cache_dir under a key made of the encoder checkpoint stamp, the clip length and the audio pairs.
    pad: how a clip shorter than clip_seconds is lengthened, 'loop' | 'zero' (the released loader: zeros)."""
    from features import AudioCache, BadClip, qa_waveforms
    from common import Progress
    keys = sorted({audio_key(r) for r in records}, key=str)
    where = {k: i for i, k in enumerate(keys)}
    index = torch.tensor([where[audio_key(r)] for r in records], dtype=torch.long)
    h = hashlib.sha1(json.dumps([file_stamp(encoder_ckpt), clip_seconds, sample_rate, keys]
                                + ([pad] if pad != 'loop' else [])).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f'enc_{h}.pt')
    if os.path.exists(path):
        log(f"encoder tokens: cache hit {path}")
        from common import load_weights
        return load_weights(path, 'encoder token cache'), index
    uniq = [{'audio_id': k[0], 'reverb_id': k[1], 'audio_id2': k[2], 'reverb_id2': k[3]} for k in keys]
    encoder.eval()
    cache, out = AudioCache(pad), []
    prog = Progress(len(uniq), name='encoder tokens', unit='clips')
    for i in range(0, len(uniq), batch_size):
        chunk = uniq[i:i + batch_size]
        try:
            wav = qa_waveforms(chunk, audio_root, reverb_root, cache, device, sample_rate=sample_rate,
                               clip_seconds=clip_seconds)
        except BadClip as e:
            raise SystemExit(f"encoder tokens: {e} (named by the QA items)") from None
        out.append(encode_waveforms(encoder, wav).to('cpu', torch.float16))
        prog.update(len(chunk))
    tokens = torch.cat(out)
    os.makedirs(cache_dir, exist_ok=True)
    from common import atomic_write
    atomic_write(path, lambda f: torch.save(tokens, f), mode='wb')
    log(f"encoder tokens: {tuple(tokens.shape)} for {len(records)} items -> {path}")
    return tokens, index

# -----------------------------------------------------------------------------
# building and loading

def dataclass_from(cls, d):
    """Build a dataclass from a dict, ignoring keys it does not have (older / newer checkpoints)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def build_llm(llm_args, device):
    import llama
    return llama.Transformer(dataclass_from(llama.ModelArgs, llm_args)).to(device)


def load_bat(ckpt_path, device='cpu', encoder_ckpt='', llm='', lora_alpha=32.0):
    """A train_bat.py checkpoint, or the released SLAM-LLM BAT model.pt (recognised by its keys) ->
    (bat, encoder, tokenizer, ckpt). The base weights a train_bat.py checkpoint names are loaded from their paths (the
    encoder checkpoint; the LLaMA directory unless llm='scratch', whose weights the ckpt carries), which it stores
    relative to its own folder (older ones: absolute); encoder_ckpt / llm override them. ckpt['paths'] holds every
    path it names, resolved (encoder, tokenizer, llm, qa_dir, audio_root, reverb_root). A SLAM model.pt names none:
    encoder_ckpt and llm are required (e.g. SpatialAST/finetuned.pth and a Llama-2-7b-hf dir); lora_alpha is for it
    alone (model.pt does not store it; the released recipe used 32)."""
    import llama
    import spatial_ast
    from common import KIND_NAMES, checkpoint_kind, found_path, load_weights
    if not os.path.exists(ckpt_path):
        raise SystemExit(f"no BAT checkpoint at {ckpt_path} (train one with train_bat.py, or pass --ckpt=...)")
    ckpt = load_weights(ckpt_path, 'BAT checkpoint')
    if is_slam_checkpoint(ckpt):
        return load_slam(ckpt, ckpt_path, encoder_ckpt, llm, device, lora_alpha)
    kind = checkpoint_kind(ckpt)
    if kind != 'bat':
        hint = ' (pass it as --encoder_ckpt=, with --ckpt= a train_bat.py checkpoint)' if kind == 'encoder' else ''
        raise SystemExit(f"{ckpt_path}: this is {KIND_NAMES[kind]}, not a BAT checkpoint from train_bat.py{hint}")
    folder = os.path.dirname(os.path.abspath(ckpt_path))
    base = ckpt['base']
    paths = {k: found_path(ckpt.get(k, ''), folder) for k in ('qa_dir', 'audio_root', 'reverb_root')}
    paths.update({k: found_path(base[k], folder) for k in ('encoder', 'tokenizer')})
    paths['llm'] = base['llm'] if base['llm'] == 'scratch' else found_path(base['llm'], folder)
    paths['encoder'] = encoder_ckpt or paths['encoder']
    if llm:
        paths['llm'], paths['tokenizer'] = llm, os.path.join(llm, 'tokenizer.model')
    if not os.path.exists(paths['tokenizer']):  # an older, absolute path whose run folder moved: look beside it
        paths['tokenizer'] = os.path.join(folder, os.path.basename(paths['tokenizer']))
    ckpt['paths'] = paths
    if not os.path.isfile(paths['tokenizer']):
        raise SystemExit(f"{ckpt_path}: its tokenizer {paths['tokenizer']} does not exist (it is kept beside ckpt.pt)")
    tokenizer = llama.Tokenizer(paths['tokenizer'])
    if not os.path.isfile(paths['encoder']):
        raise SystemExit(f"{ckpt_path}: its encoder checkpoint {paths['encoder']} does not exist (moved?); "
                         f"give its new place with --encoder_ckpt=")
    encoder, enc_ckpt = spatial_ast.load_checkpoint(paths['encoder'], device)
    encoder.eval()
    if base['llm'] == 'scratch':
        llm = build_llm(ckpt['model_args']['llm'], device)
    else:
        llm = llama.load(paths['llm'], device=device)
        lora = ckpt['config']
        llama.apply_lora(llm, rank=lora['lora_rank'], alpha=lora['lora_alpha'], dropout=lora['lora_dropout'],
                         targets=tuple(lora['lora_targets'].split(',')))
    projector = make_projector(dataclass_from(QFormerArgs, ckpt['model_args']['projector']))
    bat = BAT(projector, llm).to(device)
    enc_state = {k[len('encoder.'):]: v for k, v in ckpt['model'].items() if k.startswith('encoder.')}
    if enc_state:  # trained with freeze_encoder=False: the encoder's own weights came along
        encoder.load_state_dict(enc_state, strict=True)
    own = {k: v for k, v in ckpt['model'].items() if not k.startswith('encoder.')}
    missing, unexpected = bat.load_state_dict(own, strict=False)
    assert not unexpected, f"{ckpt_path}: unexpected keys {unexpected[:5]}"
    trained = set(own)
    assert not any(k.startswith('projector.') and k not in trained for k in missing), \
        f"{ckpt_path}: projector weights missing"
    bat.eval()
    return bat, encoder, tokenizer, ckpt


# -----------------------------------------------------------------------------
# the released SLAM-LLM BAT checkpoint (model.pt): the trainable parameters of its model, flat, under
# encoder_projector.{query, qformer.<Blip2QFormerModel names>, linear, norm} and llm.<peft names of the LoRA tensors>

SLAM_PREFIX = 'encoder_projector.'
SLAM_LAYER = {'attention.attention.query': 'self_attn.query', 'attention.attention.key': 'self_attn.key',
              'attention.attention.value': 'self_attn.value', 'attention.output.dense': 'self_attn.out',
              'attention.output.LayerNorm': 'self_norm',
              'crossattention.attention.query': 'cross_attn.query', 'crossattention.attention.key': 'cross_attn.key',
              'crossattention.attention.value': 'cross_attn.value', 'crossattention.output.dense': 'cross_attn.out',
              'crossattention.output.LayerNorm': 'cross_norm',
              'intermediate_query.dense': 'ffn.0', 'output_query.dense': 'ffn.2', 'output_query.LayerNorm': 'ffn_norm'}
SLAM_TOP = {'query': 'query_tokens', 'qformer.layernorm.weight': 'query_norm.weight',
            'qformer.layernorm.bias': 'query_norm.bias', 'linear.weight': 'proj.weight', 'linear.bias': 'proj.bias',
            'norm.weight': 'proj_norm.weight', 'norm.bias': 'proj_norm.bias'}


def is_slam_checkpoint(sd):
    return isinstance(sd, dict) and any(isinstance(k, str) and k.startswith(SLAM_PREFIX) for k in sd)


def slam_projector_key(k):
    """'qformer.encoder.layer.3.crossattention.attention.key.weight' (after encoder_projector.) -> our QFormer key
    'layers.3.cross_attn.key.weight'; '' for the text-path FFN of some transformers versions (intermediate.*,
    output.*: unused without text tokens); None if unknown."""
    if k in SLAM_TOP:
        return SLAM_TOP[k]
    parts = k.split('.')
    if parts[:3] != ['qformer', 'encoder', 'layer'] or len(parts) < 6:
        return None
    i, name, leaf = parts[3], '.'.join(parts[4:-1]), parts[-1]
    if name in SLAM_LAYER:
        return f'layers.{i}.{SLAM_LAYER[name]}.{leaf}'
    return '' if name in ('intermediate.dense', 'output.dense', 'output.LayerNorm') else None


def slam_projector_state(sd, where='model.pt'):
    """The Q-Former part of a SLAM state dict (keys with or without encoder_projector.) -> our QFormer state dict."""
    out, unknown = {}, []
    for k, v in sd.items():
        k = k[len(SLAM_PREFIX):] if k.startswith(SLAM_PREFIX) else k
        ours = slam_projector_key(k)
        if ours is None:
            unknown.append(k)
        elif ours:
            out[ours] = v
    if unknown:
        raise KeyError(f'{where}: keys that are not a BLIP-2 Q-Former projector: {unknown[:8]}')
    return out


def slam_qformer_args(state, n_heads=0):
    """QFormerArgs from the shapes of a slam_projector_state(). The head count is not in the shapes: hidden // 64
    (BERT / BLIP-2 heads are 64 wide: 12 at the released 768) unless n_heads is given."""
    n_layers = 1 + max(int(k.split('.')[1]) for k in state if k.startswith('layers.'))
    cross = sorted({int(k.split('.')[1]) for k in state if '.cross_attn.' in k})
    _, n_query, dim = state['query_tokens'].shape
    every = cross[1] - cross[0] if len(cross) > 1 else n_layers
    assert cross and cross == list(range(0, n_layers, every)), f'cross-attention in layers {cross}: not every k-th'
    return QFormerArgs(n_layers=n_layers, n_query=n_query, dim=dim, n_heads=n_heads or max(1, dim // 64),
                       ffn_dim=state['layers.0.ffn.0.weight'].shape[0], cross_every=every,
                       encoder_dim=state[f'layers.{cross[0]}.cross_attn.key.weight'].shape[1],
                       llm_dim=state['proj.weight'].shape[0])


def load_slam(sd, ckpt_path, encoder_ckpt, llm, device='cpu', lora_alpha=32.0, lora_dropout=0.05):
    """The released BAT (SLAM-LLM model.pt state dict sd) on a Spatial-AST (finetuned.pth or ours) and a LLaMA-2 HF
    dir -> (bat, encoder, tokenizer, ckpt) where ckpt is a train_bat.py-like dict (config: 10 s clips, zero padding,
    as SLAM's loader)."""
    import llama
    import spatial_ast
    if not encoder_ckpt or not llm:
        raise SystemExit(f'{ckpt_path} is a SLAM-LLM BAT checkpoint: it holds only the projector and LoRA; give '
                         f'--encoder_ckpt=<SpatialAST/finetuned.pth> and --llm=<Llama-2-7b-hf dir>')
    proj_sd = {k: v for k, v in sd.items() if k.startswith(SLAM_PREFIX)}
    lora_sd = {k: v for k, v in sd.items() if not k.startswith(SLAM_PREFIX)}
    state = slam_projector_state(proj_sd, ckpt_path)
    qargs = slam_qformer_args(state)
    encoder, enc_ckpt = spatial_ast.load_checkpoint(encoder_ckpt, device)
    assert encoder.args.dim == qargs.encoder_dim, \
        f'{ckpt_path}: the Q-Former reads {qargs.encoder_dim}-wide tokens, {encoder_ckpt} gives {encoder.args.dim}'
    lm = llama.load(llm, device='cpu')
    assert lm.args.dim == qargs.llm_dim, f'{ckpt_path}: projector out {qargs.llm_dim}, {llm} is {lm.args.dim} wide'
    rank, targets = llama.peft_lora_shape(lora_sd, ckpt_path)
    if rank:
        llama.apply_lora(lm, rank=rank, alpha=lora_alpha, dropout=lora_dropout, targets=targets)
        llama.load_peft_lora(lm, lora_sd, ckpt_path)
    projector = QFormer(qargs)
    missing, unexpected = projector.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f'{ckpt_path}: projector missing {missing[:8]}, unexpected {unexpected[:8]}')
    bat = BAT(projector, lm).to(device).eval()
    tokenizer = llama.Tokenizer(os.path.join(llm, 'tokenizer.model'))
    ckpt = {'config': {'clip_seconds': 10.0, 'clip_pad': 'zero', 'encode_batch_size': 16, 'lora_rank': rank,
                       'lora_alpha': lora_alpha, 'llm': llm},
            'base': {'encoder': encoder_ckpt, 'llm': llm, 'tokenizer': os.path.join(llm, 'tokenizer.model')},
            'model_args': {'projector': asdict(qargs), 'llm': asdict(lm.args)}, 'classes': enc_ckpt.get('classes'),
            'qa_dir': '', 'audio_root': '', 'reverb_root': '', 'slam': True}
    ckpt['paths'] = {**ckpt['base'], 'qa_dir': '', 'audio_root': '', 'reverb_root': ''}
    return bat, encoder.eval(), tokenizer, ckpt
