"""
The BAT model pieces shared by train_bat.py, eval.py and sample.py:
- `QFormer`: a hand-written BLIP-2-style Q-Former (learned queries, self-attention, cross-attention to the
  encoder tokens every 2nd layer, post-LayerNorm BERT layers) + Linear(hidden -> LLM dim) + LayerNorm, as the
  released SLAM-LLM recipe (8 layers, 64 queries, hidden 768, 12 heads, FFN 3072 -> 64 audio tokens);
- `PoolProjector`: the plain linear / MLP projector for ablation (encoder tokens pooled to n_query tokens);
- the prompt template, and `collate` which lays out a batch as
  [left pads][audio prefix][BOS + prompt][answer + EOS][right pads] with targets only on answer + EOS;
- `BAT`: projector + LLM, turning encoder tokens into the audio prefix; loss and (greedy or beam) answering;
- `encoder_tokens`: the frozen encoder's token sequence per QA item, computed once in batches and cached on disk;
- `load_bat`: rebuild a trained model from a train_bat.py checkpoint.
Nothing runs on import.
"""
import hashlib
import json
import math
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
    projector: str = 'qformer'  # 'qformer' | 'linear' | 'mlp' (ablation: pooled encoder tokens)
    table_tokens: int = 0     # the encoder's position-table tokens (spatial_ast.table), after its token sequence;
                              # each goes to the LLM through its own Linear + LayerNorm, after the projector's n_query
    named_sources: int = 0    # > 0: the encoder's class rows (spatial_ast.class_rows, n_classes of them) come last,
                              # and the rows of the sounds the question names become 3 more slots (NamedSources)

    @property
    def n_prefix(self):       # audio slots in front of the prompt
        return self.n_query + self.table_tokens + (NamedSources.n_slots if self.named_sources else 0)


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
        self.audio_norm = nn.LayerNorm(a.encoder_dim)  # BLIP-2's ln_vision: Spatial-AST tokens come un-normalised
        self.query_norm = nn.LayerNorm(a.dim, eps=a.eps)
        self.drop = nn.Dropout(a.dropout)
        self.layers = nn.ModuleList(QFormerLayer(a, cross=(i % a.cross_every == 0)) for i in range(a.n_layers))
        self.proj = nn.Linear(a.dim, a.llm_dim)
        self.proj_norm = nn.LayerNorm(a.llm_dim, eps=1e-5)

    def forward(self, audio):
        q = self.drop(self.query_norm(self.query_tokens.expand(audio.shape[0], -1, -1)))  # (B, n_query, dim)
        audio = self.audio_norm(audio)
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


class NamedSources(nn.Module):
    """Question-keyed reading of the encoder's per-class position head: the rows of the (up to) two sounds the
    question names, in the order it names them, and their difference -> 3 prefix slots, each Linear + LayerNorm.
    Why: a tiny LLM trained from scratch does not learn to find "the siren" among table rows by itself (measured:
    with true positions of all 25 classes as rows, E stayed at chance), but reads two rows in question order.
    The lookup is by name (name_index), as an InstructBLIP projector reads the instruction, without learning it."""
    n_slots = 3

    def __init__(self, llm_dim):
        super().__init__()
        self.slots = nn.ModuleList(nn.Sequential(nn.Linear(6, llm_dim), nn.LayerNorm(llm_dim)) for _ in range(3))
        # statistics of (right, front, up, distance / 2 m) over the named sounds, saved with the weights (fit): the
        # mean and spread of the encoder's positions, the spread of the two named sounds' difference, and the same for
        # true positions. A head trained on mixtures squeezes its rows toward the mix's overall position (measured:
        # left/right differences 5x narrower than the true ones), so the slots read standardised values, and true
        # positions (teacher_rows, eval true_rows) enter in the encoder's units (from_true)
        for name in ('mean', 'scale', 'diff_scale', 'true_mean', 'true_scale', 'true_diff_scale'):
            self.register_buffer(name, torch.zeros(4) if name.endswith('mean') else torch.ones(4))

    @torch.no_grad()
    def fit(self, rows, named, true=None):
        """Set the statistics from the encoder's class rows (N, C, >=5) [and the true ones (N, C, 5)] of the items
        named (N, 2) names."""
        for prefix, x in (('', rows), ('true_', true)):
            if x is not None:
                for name, value in zip(('mean', 'scale', 'diff_scale'), named_spread(x, named)):
                    getattr(self, prefix + name).copy_(value)

    @torch.no_grad()
    def from_true(self, rows, true, named):
        """The encoder's class rows (N, C, >=5) with the named sounds' positions taken from the true rows (N, C, 5),
        in the encoder's units: two named sounds keep the encoder's centre of the pair and take the true difference
        scaled to the encoder's spread of differences (so a reader trained on them meets the same geometry in the
        encoder's rows); one named sound takes its true position at the encoder's mean and spread. Probabilities
        stay the encoder's."""
        st = {k: v.to(rows.device) for k, v in self.named_buffers()}
        named = named.to(rows.device)
        x, t = pick_named(rows, named)[..., 1:], pick_named(true.to(rows.device), named)[..., 1:]  # (N, 2, 4) each
        half = (t[:, 0] - t[:, 1]) / 2 * (st['diff_scale'] / st['true_diff_scale'])  # (N, 4)
        centre = x.mean(1)
        pair = torch.stack([centre + half, centre - half], 1)
        one = (t - st['true_mean']) / st['true_scale'] * st['scale'] + st['mean']
        new = torch.where((named >= 0).all(1)[:, None, None], pair, one)
        out = rows.clone()
        for j in range(named.shape[1]):
            m = named[:, j] >= 0
            out[m.nonzero()[:, 0], named[m, j], 1:5] = new[m, j].to(out.dtype)
        return out

    def forward(self, rows, named):
        """rows (B, C, >=5) = [probability, right, front, up, distance / 2 m, ...] per class; named (B, 2) class
        indices (-1 = no such sound in the question) -> (B, 3, llm_dim)."""
        present = (named >= 0).unsqueeze(-1).float()  # (B, 2, 1)
        x = pick_named(rows, named)  # (B, 2, 5)
        x = torch.cat([x[..., :1], (x[..., 1:] - self.mean) / self.scale], -1) * present
        both = present[:, 0] * present[:, 1]  # (B, 1)
        d = (x[:, 0, 1:] - x[:, 1, 1:]) * self.scale / self.diff_scale  # the raw difference over its own spread
        diff = torch.cat([both, torch.zeros_like(both), d * both], -1)  # (B, 6)
        feats = [torch.cat([present[:, 0], x[:, 0]], -1), torch.cat([present[:, 1], x[:, 1]], -1), diff]
        return torch.stack([slot(f) for slot, f in zip(self.slots, feats)], 1)


def pick_named(rows, named):
    """rows (N, C, >=5), named (N, 2) -> (N, 2, 5): the first 5 entries of each named class's row (class 0's where
    named is -1; callers mask those)."""
    return rows[..., :5].float().gather(1, named.clamp(min=0).unsqueeze(-1).expand(-1, -1, 5))


def named_spread(rows, named):
    """Over a set of items (rows (N, C, >=5), named (N, 2)): the mean and std (4,) of the named classes' positions
    (right, front, up, distance / 2 m), and the std (4,) of the first named minus the second where both are."""
    x = pick_named(rows, named)[..., 1:]  # (N, 2, 4)
    one, both = x[named >= 0], (named >= 0).all(1)
    spread = lambda v: v.std(0).clamp(min=1e-6) if len(v) > 1 else x.new_ones(4)  # too few items: identity
    return (one.mean(0) if len(one) else x.new_zeros(4)), spread(one), spread(x[both, 0] - x[both, 1])


def name_index(questions, classes, k=2):
    """The classes each question names, in the order it names them: (len(questions), k) long, -1 where fewer.
    Case-insensitive whole-word match, longest name first (so "church bell" is not also "bell")."""
    import re
    order = sorted(range(len(classes)), key=lambda c: -len(classes[c]))
    pats = [(c, re.compile(r'(?<![a-z0-9])' + re.escape(classes[c].lower()) + r'(?![a-z0-9])')) for c in order]
    out = torch.full((len(questions), k), -1, dtype=torch.long)
    for i, q in enumerate(questions):
        q, found = q.lower(), []
        for c, pat in pats:
            m = pat.search(q)
            if m:
                found.append((m.start(), c))
                q = q[:m.start()] + ' ' * (m.end() - m.start()) + q[m.end():]  # a shorter name must not match here
        for j, (_, c) in enumerate(sorted(found)[:k]):
            out[i, j] = c
    return out


def true_rows(records, classes):
    """The class rows (N, C, 5) a perfect encoder would give each QA item, from its `targets` (our QA files carry
    them): [1, right, front, up, distance / 2 m] for each source's first label, zeros for every other class."""
    from common import position_vector
    where = {c: i for i, c in enumerate(classes)}
    rows = torch.zeros(len(records), len(classes), 5)
    for i, r in enumerate(records):
        for t in r.get('targets') or []:
            if t['labels'][0] in where:
                rows[i, where[t['labels'][0]]] = torch.tensor([1.0] + position_vector(t))
    return rows


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

    def __init__(self, projector, llm, classes=None):
        super().__init__()
        self.projector, self.llm = projector, llm
        a = projector.args
        self.classes = classes  # the encoder's class names, in its head's order (named_sources looks names up here)
        assert not a.named_sources or (classes and len(classes) == a.named_sources), \
            f'named_sources={a.named_sources} needs the encoder class names ({a.named_sources} of them)'
        # the position table skips the projector: a Q-Former's fixed queries would have to learn to copy it
        self.table = nn.Sequential(nn.Linear(a.encoder_dim, a.llm_dim), nn.LayerNorm(a.llm_dim)) if a.table_tokens else None
        self.named = NamedSources(a.llm_dim) if a.named_sources else None

    def embeds(self, audio, batch):
        """Token embeddings with the audio prefix written into the audio slots. audio: (B, S, encoder_dim) =
        [encoder tokens | table_tokens rows | named_sources: one row per class]; batch['named'] (B, 2) with
        named_sources (name_index of the questions)."""
        emb = self.llm.embed(batch['tokens'])  # (B, T, llm_dim)
        audio = audio.to(emb.dtype)
        a = self.projector.args
        rows = a.named_sources  # = n_classes: the class rows at the end of the sequence
        k = a.table_tokens
        seq = audio[:, :audio.shape[1] - k - rows]
        prefix = [self.projector(seq)]  # (B, n_query, llm_dim)
        if k:
            prefix.append(self.table(audio[:, seq.shape[1]:seq.shape[1] + k]))  # (B, k, llm_dim)
        if rows:
            prefix.append(self.named(audio[:, -rows:], batch['named']))  # (B, 3, llm_dim)
        prefix = torch.cat(prefix, 1)
        return emb.masked_scatter(batch['audio_mask'].unsqueeze(-1), prefix.to(emb.dtype))

    def name_index(self, questions):
        """(B, 2) indices of the sounds each question names (None for models without named_sources)."""
        return name_index(questions, self.classes) if self.named is not None else None

    def forward(self, audio, batch):
        """Returns the mean loss over answer + EOS tokens."""
        _, loss = self.llm(embeds=self.embeds(audio, batch), targets=batch['targets'],
                           attention_mask=batch['attention_mask'], loss_only=True)
        return loss

    @torch.no_grad()
    def answer(self, audio, prompts, pad_id, eos_id, max_new_tokens=32, beams=1, named=None):
        """Greedy (KV cache, batched) or beam answers: a list of id lists, cut at the first EOS.
        named: (B, 2) name_index of the questions (models with named_sources)."""
        n_prefix = self.projector.args.n_prefix
        if beams > 1:
            return [self._beam(audio[i:i + 1], prompts[i], pad_id, eos_id, max_new_tokens, beams,
                               None if named is None else named[i:i + 1]) for i in range(len(prompts))]
        batch = batch_to(with_named(collate(prompts, None, n_prefix, pad_id), named), audio.device)
        out = self.llm.generate(embeds=self.embeds(audio, batch), attention_mask=batch['attention_mask'],
                                max_new_tokens=max_new_tokens, temperature=0.0, eos_id=eos_id)  # (B, new)
        return [cut_at_eos(row, eos_id) for row in out.tolist()]

    def _beam(self, audio, prompt, pad_id, eos_id, max_new_tokens, beams, named=None):
        """Plain beam search for one item (the released recipe decodes with num_beams=4, batch 1); no KV cache:
        each step re-runs the whole prefix, which is fine at eval sizes."""
        n_prefix = self.projector.args.n_prefix
        batch = batch_to(with_named(collate([prompt], None, n_prefix, pad_id), named), audio.device)
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


def with_named(batch, named):
    if named is not None:
        batch['named'] = torch.as_tensor(named, dtype=torch.long)
    return batch


def live_seq(j, t, ids):
    return ids[j].tolist() + [t] if ids.shape[1] else [t]


def cut_at_eos(ids, eos_id):
    return ids[:ids.index(eos_id)] if eos_id in ids else ids


def trainable_state(model):
    """Only what trains (projector, LoRA, or the whole scratch LLM): the checkpoint names the base it belongs on."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}

# -----------------------------------------------------------------------------
# the frozen encoder's tokens, once per distinct (clip, IR) pair, cached on disk

def audio_key(r):
    return (r.get('audio_id'), r.get('reverb_id'), r.get('audio_id2'), r.get('reverb_id2'))


def file_stamp(path):
    st = os.stat(path)
    return f'{os.path.abspath(path)}:{st.st_size}:{int(st.st_mtime)}'


@torch.no_grad()
def encode_waveforms(encoder, wav, class_rows=False):
    """(B, 2, N) binaural waveforms -> (B, S, dim) encoder tokens (spatial_ast.SpatialAST.tokens)."""
    from features import binaural_features
    return encoder.tokens(binaural_features(wav), class_rows)


def encoder_tokens(records, encoder, encoder_ckpt, audio_root, reverb_root, cache_dir, device,
                   clip_seconds=10.0, batch_size=16, sample_rate=32000, log=print, class_rows=False):
    """Returns (tokens (U, S, dim) float16 on CPU, index (len(records),) long into it). U = distinct audio pairs.
    Cached in cache_dir under a key made of the encoder checkpoint stamp, the clip length and the audio pairs."""
    from features import AudioCache, BadClip, qa_waveforms
    from common import Progress
    keys = sorted({audio_key(r) for r in records}, key=str)
    where = {k: i for i, k in enumerate(keys)}
    index = torch.tensor([where[audio_key(r)] for r in records], dtype=torch.long)
    h = hashlib.sha1(json.dumps([file_stamp(encoder_ckpt), clip_seconds, sample_rate, keys] + ([1] if class_rows else []))
                     .encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f'enc_{h}.pt')
    if os.path.exists(path):
        log(f"encoder tokens: cache hit {path}")
        from common import load_weights
        return load_weights(path, 'encoder token cache'), index
    uniq = [{'audio_id': k[0], 'reverb_id': k[1], 'audio_id2': k[2], 'reverb_id2': k[3]} for k in keys]
    encoder.eval()
    cache, out = AudioCache(), []
    prog = Progress(len(uniq), name='encoder tokens', unit='clips')
    for i in range(0, len(uniq), batch_size):
        chunk = uniq[i:i + batch_size]
        try:
            wav = qa_waveforms(chunk, audio_root, reverb_root, cache, device, sample_rate=sample_rate,
                               clip_seconds=clip_seconds)
        except BadClip as e:
            raise SystemExit(f"encoder tokens: {e} (named by the QA items)") from None
        out.append(encode_waveforms(encoder, wav, class_rows).to('cpu', torch.float16))
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


def load_bat(ckpt_path, device='cpu', encoder_ckpt=''):
    """A train_bat.py checkpoint -> (bat, encoder, tokenizer, ckpt). The base weights it names are loaded from
    their paths (the encoder checkpoint; the LLaMA directory unless llm='scratch', whose weights the ckpt carries),
    which the checkpoint stores relative to its own folder (older ones: absolute). encoder_ckpt overrides the
    encoder's path. ckpt['paths'] holds every path it names, resolved (encoder, tokenizer, llm, qa_dir, audio_root,
    reverb_root)."""
    import llama
    import spatial_ast
    from common import KIND_NAMES, checkpoint_kind, found_path, load_weights
    if not os.path.exists(ckpt_path):
        raise SystemExit(f"no BAT checkpoint at {ckpt_path} (train one with train_bat.py, or pass --ckpt=...)")
    ckpt = load_weights(ckpt_path, 'BAT checkpoint')
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
    bat = BAT(projector, llm, enc_ckpt.get('classes')).to(device)
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
