"""common.py: the CONTRACTS §1 geometry, record reading with located errors, atomic writes."""
import json
import os

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
