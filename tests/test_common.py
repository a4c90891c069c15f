"""common.py: the geometry of docs/conventions.md, AP/mAP, the lr schedule, the stages, record reading with located
errors, atomic writes."""
import json
import os

import numpy as np
import pytest

import common


def test_axes_and_classes():
    sensor = '1.0,1.5,2.0'
    # straight right, level, 2 m: azimuth 0, elevation 0 -> class 90, distance class 4
    t = common.targets_of(sensor, '3.0,1.5,2.0')
    assert (t['azimuth'], t['elevation'], t['distance_class']) == (0, 0, 4)
    assert t['direction'] == ['right', 'behind', 'below']  # dz == 0 is not front; dy == 0 is not above
    assert common.azimuth_deg(common.offset(sensor, '1.0,1.5,0.0')) == 90    # -Z is front
    assert common.azimuth_deg(common.offset(sensor, '-1.0,1.5,2.0')) == 180  # -X is left
    assert common.azimuth_deg(common.offset(sensor, '1.0,1.5,5.0')) == 270   # +Z is behind
    d = common.offset(sensor, '1.0,2.5,1.0')  # 45 degrees up, in front
    assert common.elevation_deg(d) == 45 and common.elevation_class(d) == 135
    assert common.direction_words(d) == ('right', 'front', 'above')
    assert common.elevation_class((0.0, 1.0, 0.0)) == 0  # +90 wraps to class 0, as the official code


@pytest.mark.parametrize('m,words', [(0.5, '0.5m'), (1.0, '1m'), (1.26, '1.5m'), (1.24, '1m'), (9.9, '10m'), (3.75, '4m')])
def test_distance_words(m, words):
    assert common.distance_words(m) == words


def test_read_records_jsonl_and_official(tmp_path):
    p = tmp_path / 'a.jsonl'
    p.write_text('{"x": 1}\n\n{"x": 2}\n')
    assert common.read_records(p) == [{'x': 1}, {'x': 2}]
    q = tmp_path / 'b.json'
    q.write_text(json.dumps({'data': [{'x': 3}]}, indent=1))
    assert common.read_records(q) == [{'x': 3}]
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"x": 1}\n{"x": \n')
    with pytest.raises(ValueError, match=r'bad.jsonl:2'):
        common.read_records(bad)
    with pytest.raises(KeyError, match=r'f.jsonl:3.*audio_id'):
        common.require({'question': 'q'}, ['audio_id', 'question'], 'f.jsonl:3')


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    p = tmp_path / 'out.json'
    common.write_json(p, {'ok': 1})

    def boom(f):
        f.write('half')
        raise RuntimeError('interrupted')
    with pytest.raises(RuntimeError):
        common.atomic_write(p, boom)
    assert json.loads(p.read_text()) == {'ok': 1}
    assert os.listdir(tmp_path) == ['out.json']  # no temp file left behind


def test_average_precision_matches_sklearn():
    # hand-worked: ranks 1..4 with labels 1,0,1,0 -> AP = (1/1 + 2/3) / 2
    assert common.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    # tied scores are one threshold (sklearn): all tied -> AP = prevalence, whatever the order
    assert common.average_precision([1, 1, 1, 1], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert common.average_precision([1, 1, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.25)
    assert common.average_precision([0.3, 0.2], [0, 0]) is None  # no positive: undefined
    skm = pytest.importorskip('sklearn.metrics')
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, s = rng.integers(0, 2, 30), np.round(rng.random(30), 1)  # rounding makes ties
        if y.any():
            assert common.average_precision(s, y) == pytest.approx(skm.average_precision_score(y, s))


def test_mean_ap_leaves_out_classes_without_a_positive():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.1, 0.3, 0.5]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0.0]])  # class 2 has no positive: not counted (not as 0)
    assert common.mean_ap(scores, labels) == pytest.approx(1.0)
    labels[2, 0] = 1  # class 0: positives ranked 1st and 3rd -> (1 + 2/3) / 2
    assert common.mean_ap(scores, labels) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert common.mean_ap(scores, np.zeros((3, 3))) is None
    assert common.mean_ap(scores, labels > 0.5) == common.mean_ap(scores, labels)  # bool or 0/1 labels


def test_lr_schedule():
    lr = lambda it: common.get_lr(it, 1e-3, 1e-6, 10, 100)
    assert lr(0) < lr(9) <= 1e-3  # linear warmup
    assert lr(10) == pytest.approx(1e-3)
    assert lr(55) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))  # half way down the cosine
    assert lr(100) == lr(500) == 1e-6
    assert all(lr(i) >= lr(i + 1) for i in range(10, 120))


def test_stage_types():
    assert common.stage_types(1) == ['CLASSIFICATION', 'DOA']
    assert common.stage_types(2) == ['CLASSIFICATION', 'DOA', 'MIXUP_SINGLE_CLASSIFICATION', 'MIXUP_SINGLE_DOA']
    assert common.stage_types(3) == list(common.TYPE_LETTER)
