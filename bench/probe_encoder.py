"""
What a frozen Spatial-AST tells the LLM: diagnostics of an encoder checkpoint on a make_qa.py QA folder.

1. Its own heads on the single-source eval items (A, B), per axis of the DoA answer: left/right, front/behind,
   above/below (the three words B and D must all get right), and distance within 0.5 m (DER's rule); beside them,
   what the input offers: an MLP on time-pooled interaural features (no encoder) trained on the single-source train
   items (so the cues are in the features, or not).
2. An upper-bound reader for the E Yes/No questions: a small cross-attention probe (the two classes named in the
   question as queries over the frozen tokens of the mix, plus the asked relation) trained on the E train items and
   scored on the E eval items. It knows exactly which classes the question names, so if it stays near 50 %, the
   tokens do not carry what E needs, and no projector or LLM on top of them can answer E either.
3. For encoders with a per-class position head (train_encoder.py class_positions=True): the E Yes/No items answered
   straight from that head (x's position minus y's along the asked axis), per axis, with no training at all.

    python bench/probe_encoder.py                                          # the demo's encoder and QA (~4 min, CPU)
    python bench/probe_encoder.py --ckpt=out/encoder/ckpt.pt --qa_dir=out/qa --device=cuda
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import features
import spatial_ast
from bat import encoder_tokens
from common import read_records
from make_qa import DIRECTIONS, REL_PHRASE

# --- config ---
ckpt = 'out/demo/encoder/ckpt.pt'  # train_encoder.py checkpoint
qa_dir = 'out/demo/qa'             # make_qa.py output (train.jsonl, eval.jsonl, meta.json)
cache_dir = 'out/probe_cache'      # frozen-token cache (the same files train_bat.py makes)
clip_seconds = 2.0                 # as the QA was trained with (demo 2.0)
iters = 3000                       # probe training steps (batch 64)
device = 'cpu'
seed = 0
# ---
for arg in sys.argv[1:]:  # tiny --key=value parser (configurator.py needs the repo root as cwd)
    key, value = arg.lstrip('-').split('=', 1)
    assert key in globals(), f'unknown option {key}'
    globals()[key] = type(globals()[key])(value == 'True' if isinstance(globals()[key], bool) else value)
E_TYPES = ('MIXUP_DIRECTION', 'MIXUP_DISTANCE_BOTH')


def direction_words(az, el):
    """Azimuth (deg, 0 right, 90 front) and elevation (deg) -> the three DoA words (CONTRACTS §1)."""
    return ['left' if 90 < az < 270 else 'right', 'front' if 0 < az < 180 else 'behind', 'above' if el > 0 else 'below']


@torch.no_grad()
def single_source(encoder, records, meta):
    """Over single-source items: the encoder heads' hits (N, 4: three words, distance within 0.5 m), pooled
    interaural features (N, 384: ILD per mel band = log-mel L - R, mean cos/sin IPD) and the true words (N, 3)."""
    cache, hits, pooled, truth = features.AudioCache(), [], [], []
    for i in range(0, len(records), 64):
        chunk = records[i:i + 64]
        f, targets = features.qa_features(chunk, meta['audio_root'], meta['reverb_root'], cache, device,
                                          clip_seconds=clip_seconds)  # (B, 4, T, 128)
        _, d, a, e = encoder(f)
        m = f.mean(2)  # (B, 4, 128) time averages
        pooled.append(torch.cat([m[:, 0] - m[:, 1], m[:, 2], m[:, 3]], 1).cpu())
        for k, t in enumerate(targets):
            words, true = direction_words(int(a[k].argmax()), int(e[k].argmax()) - 90), t[0]['direction']
            hits.append([w == g for w, g in zip(words, true)] + [abs(int(d[k].argmax()) - t[0]['distance_class']) <= 1])
            truth.append([true[0] == 'left', true[1] == 'front', true[2] == 'above'])
    return np.array(hits, float), torch.cat(pooled), torch.tensor(truth).long()


def cue_probe(Xtr, ytr, Xev, yev, steps=1500):
    """An MLP from pooled interaural features to the three words: what the input offers without any encoder."""
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-5
    Xtr, Xev = (Xtr - mu) / sd, (Xev - mu) / sd
    net = nn.Sequential(nn.Linear(Xtr.shape[1], 256), nn.GELU(), nn.Dropout(0.3), nn.Linear(256, 6))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(steps):
        b = torch.randint(len(ytr), (128,))
        loss = nn.functional.cross_entropy(net(Xtr[b]).view(-1, 2), ytr[b].view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return (net(Xev).view(-1, 3, 2).argmax(-1) == yev).float().mean(0).numpy()


class Reader(nn.Module):
    """Queries = embeddings of the two named classes; two cross-attention layers over the tokens; + the relation."""

    def __init__(self, dim, n_classes, n_relations, heads=4):
        super().__init__()
        self.cls, self.rel, self.norm = nn.Embedding(n_classes, dim), nn.Embedding(n_relations, dim), nn.LayerNorm(dim)
        self.att = nn.ModuleList(nn.MultiheadAttention(dim, heads, dropout=0.1, batch_first=True) for _ in range(2))
        self.out = nn.Sequential(nn.Linear(3 * dim, 256), nn.GELU(), nn.Dropout(0.2), nn.Linear(256, 2))

    def forward(self, tokens, x, y, rel):  # tokens (B, S, dim); x, y, rel (B,)
        mem = self.norm(tokens)
        h = torch.stack([self.cls(x), self.cls(y)], 1)  # (B, 2, dim)
        for att in self.att:
            h = h + att(h, mem, mem, need_weights=False)[0]
        return self.out(torch.cat([h.flatten(1), self.rel(rel)], 1))


# relation -> (axis of the class_positions head: right, front, up, distance; sign of x minus y when it holds)
REL_AXIS = {'left': (0, -1), 'right': (0, 1), 'front': (1, 1), 'behind': (1, -1), 'above': (2, 1), 'below': (2, -1),
            'closer': (3, -1), 'farther': (3, 1)}


def relation_of(question):
    rels = sorted(REL_PHRASE, key=lambda r: -len(REL_PHRASE[r]))  # longest phrase first ('behind' is in no other)
    return next(k for k in rels if REL_PHRASE[k] in question)


@torch.no_grad()
def head_answers(encoder, records, meta, classes):
    """E Yes/No straight from a class_positions head (no training): x minus y along the asked axis.
    Returns {relation: (hits, n)}."""
    records = [r for r in records if r['question_type'] in E_TYPES]
    cache, tally = features.AudioCache(), {}
    for i in range(0, len(records), 64):
        chunk = records[i:i + 64]
        f, _ = features.qa_features(chunk, meta['audio_root'], meta['reverb_root'], cache, device,
                                    clip_seconds=clip_seconds)
        pos = encoder(f, positions=True)[4]  # (B, C, 4)
        for k, r in enumerate(chunk):
            rel = relation_of(r['question'])
            axis, sign = REL_AXIS[rel]
            x, y = (classes.index(t['labels'][0]) for t in r['targets'][:2])
            holds = sign * float(pos[k, x, axis] - pos[k, y, axis]) > 0
            h, n = tally.get(rel, (0, 0))
            tally[rel] = (h + (holds == (r['answer'] == 'Yes')), n + 1)
    return tally


def e_items(records, encoder, meta, classes):
    """Frozen tokens (N, S, dim) of the E Yes/No items, and (x class, y class, relation, answer, is-distance)."""
    records = [r for r in records if r['question_type'] in E_TYPES]
    tokens, index = encoder_tokens(records, encoder, ckpt, meta['audio_root'], meta['reverb_root'], cache_dir, device,
                                   clip_seconds, 32, log=lambda *a: None)
    rows = []
    for r in records:
        rel = relation_of(r['question'])
        rows.append((classes.index(r['targets'][0]['labels'][0]), classes.index(r['targets'][1]['labels'][0]),
                     list(REL_PHRASE).index(rel), r['answer'] == 'Yes', rel in ('closer', 'farther')))
    return tokens[index].float().to(device), torch.tensor(rows, device=device)


if __name__ == '__main__':
    torch.manual_seed(seed)
    meta = json.load(open(os.path.join(qa_dir, 'meta.json')))
    encoder, enc_ckpt = spatial_ast.load_checkpoint(ckpt, device)
    encoder.eval()
    classes = meta.get('classes') or enc_ckpt['classes']
    train, evals = (read_records(os.path.join(qa_dir, f'{s}.jsonl')) for s in ('train', 'eval'))

    hits, P_ev, y_ev = single_source(encoder, [r for r in evals if not r.get('audio_id2')], meta)
    lr, fb, ab, dist = hits.mean(0)
    print(f"encoder heads, {len(hits)} single-source eval items: left/right {100 * lr:.1f} %, front/behind "
          f"{100 * fb:.1f} %, above/below {100 * ab:.1f} %, distance within 0.5 m {100 * dist:.1f} % "
          f"(all three words right at most ~{100 * lr * fb * ab:.0f} % if the axes are independent)")
    _, P_tr, y_tr = single_source(encoder, [r for r in train if not r.get('audio_id2')], meta)
    cue = cue_probe(P_tr, y_tr, P_ev, y_ev)
    print(f"the input itself (MLP on pooled ILD + IPD, {len(y_tr)} train items): left/right {100 * cue[0]:.1f} %, "
          f"front/behind {100 * cue[1]:.1f} %, above/below {100 * cue[2]:.1f} %")

    if encoder.args.class_positions:
        tally = head_answers(encoder, evals, meta, classes)
        pct = lambda rels: 100 * sum(tally[r][0] for r in rels) / max(1, sum(tally[r][1] for r in rels))
        print('E straight from the class_positions head (eval items): ' + ', '.join(
            f'{a}/{b} {pct((a, b)):.1f} %' for a, b in (('left', 'right'), ('front', 'behind'), ('above', 'below'),
                                                        ('closer', 'farther'))) +
              f'; direction {pct(DIRECTIONS):.1f} %, distance {pct(("closer", "farther")):.1f} %')

    Xtr, rtr = e_items(train, encoder, meta, classes)
    Xev, rev = e_items(evals, encoder, meta, classes)
    torch.manual_seed(seed)  # the reader's run does not depend on the diagnostics above
    reader = Reader(Xtr.shape[-1], len(classes), len(REL_PHRASE)).to(device)
    opt = torch.optim.AdamW(reader.parameters(), lr=1e-3, weight_decay=0.05)
    for it in range(1, iters + 1):
        b = torch.randint(len(rtr), (64,), device=device)
        logits = reader(Xtr[b], rtr[b, 0], rtr[b, 1], rtr[b, 2])
        loss = nn.functional.cross_entropy(logits, rtr[b, 3].long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 500 == 0 or it == iters:
            reader.eval()
            with torch.no_grad():
                line = []
                for name, X, r in (('train', Xtr, rtr), ('eval', Xev, rev)):
                    ok = (reader(X, r[:, 0], r[:, 1], r[:, 2]).argmax(1) == r[:, 3].long()).float()
                    line.append(f"{name} direction {100 * ok[r[:, 4] == 0].mean():.1f} / distance "
                                f"{100 * ok[r[:, 4] == 1].mean():.1f}")
            reader.train()
            print(f"E reader iter {it}/{iters} ({len(rtr)} train / {len(rev)} eval items): " + '; '.join(line), flush=True)
