"""render.py as a script: layout and fields of the index, same seed same bytes, disjoint train/eval rooms, rerun."""
import json
from pathlib import Path

import numpy as np
import pytest

import script_hooks as hooks
from common import distance_class, offset, parse_xyz

pytestmark = pytest.mark.xdist_group('render_script')  # its module fixture is built once, on one worker (test.sh)
ARGS = ['--n_train_rooms=3', '--n_eval_rooms=2', '--irs_per_room=8', '--ir_seconds=0.25', '--batch_size=16',
        '--device=cpu']


def run(out_dir, *extra):
    return hooks.run_ok('render.py', *ARGS, f'--out_dir={out_dir}', *extra)  # in this process


def files(out_dir):
    return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in sorted(Path(out_dir).rglob('*'))
            if p.is_file() and p.name != 'summary.md'}  # summary.md holds the run time


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    a, b, c = (tmp_path_factory.mktemp(n) for n in 'abc')
    run(a, '--seed=3')
    run(b, '--seed=3')
    run(c, '--seed=4')
    return a, b, c


def test_layout_and_index_fields(rendered):
    out = rendered[0]
    splits = {s: [json.loads(l) for l in (out / f'{s}_reverberation.jsonl').read_text().splitlines()]
              for s in ('train', 'eval')}
    assert len(splits['train']) == 24 and len(splits['eval']) == 16
    for split, recs in splits.items():
        for r in recs:
            assert r['fname'] == f"{r['room_id']}/{Path(r['fname']).stem}.npy" and r['room_id'].startswith(split)
            ir = np.load(out / 'binaural' / r['fname'])
            assert ir.shape == (2, 8000) and ir.dtype == np.float32 and np.isfinite(ir).all()
            sensor, source, agent = (parse_xyz(r[k]) for k in ('sensor_position', 'source_position', 'agent_position'))
            assert agent[0] == sensor[0] and agent[2] == sensor[2]  # agent = floor point under the sensor
            dims = r['room_dims']
            assert all(0 <= p[i] <= dims[i] for p in (sensor, source) for i in range(3))
            assert 0.5 <= r['distance'] <= 10 and r['distance_class'] == distance_class(offset(sensor, source))
            assert -40 <= r['elevation'] <= 90 and 0 < r['absorption'] <= 1 and 0.1 < r['rt60'] < 2.0
    octants = {tuple(r['direction']) for r in splits['train']}
    assert len(octants) == 8  # every left/right x front/behind x above/below
    summary = (out / 'summary.md').read_text()
    assert 'train: 24 IRs in 3 rooms' in summary and 'octant:' in summary and 'distance class:' in summary
    assert not list(out.rglob('*.tmp'))  # atomic writes leave no temporaries


def test_same_seed_same_bytes_and_disjoint_rooms(rendered):
    a, b, c = rendered
    fa, fb, fc = files(a), files(b), files(c)
    assert fa == fb
    assert fa.keys() == fc.keys() and fa['train_reverberation.jsonl'] != fc['train_reverberation.jsonl']
    recs = {s: [json.loads(l) for l in (a / f'{s}_reverberation.jsonl').read_text().splitlines()] for s in ('train', 'eval')}
    ids = {s: {r['room_id'] for r in recs[s]} for s in recs}
    dims = {s: {tuple(r['room_dims']) for r in recs[s]} for s in recs}
    assert not ids['train'] & ids['eval'] and not dims['train'] & dims['eval']


def test_rerun_overwrites_cleanly(rendered, tmp_path):
    a = rendered[0]
    run(tmp_path, '--seed=3')
    (tmp_path / 'binaural' / 'train_000' / '0.npy').write_bytes(b'half-written')  # as if interrupted and corrupted
    run(tmp_path, '--seed=3')
    assert files(tmp_path) == files(a)
