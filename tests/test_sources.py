"""sources.py: the synthesised bank, the collection readers, bad clips skipped and counted, reproducible splits."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
sys.path.insert(0, str(ROOT))
import features  # noqa: E402
import sources  # noqa: E402


def test_bank_has_20_plus_audioset_classes():
    assert len(sources.SYNTH_CLASSES) >= 20
    onto = SHARED / 'data' / 'audioset' / 'ontology.json'
    if not onto.is_file():
        pytest.skip('../shared AudioSet ontology not present')
    names = {n['name'] for n in json.loads(onto.read_text())}
    assert set(sources.SYNTH_CLASSES) <= names, set(sources.SYNTH_CLASSES) - names
    assert set(sources.ESC50_TO_AUDIOSET.values()) <= names, set(sources.ESC50_TO_AUDIOSET.values()) - names


def test_bank_deterministic_varied_and_sane():
    for name in sources.SYNTH_CLASSES:
        a = sources.synth_clip(name, 1, 0, 0.5)
        assert a.dtype == np.float32 and a.shape == (16000,) and np.isfinite(a).all()
        assert np.sqrt(np.mean(a ** 2)) > 1e-3, name  # never silent
        assert np.array_equal(a, sources.synth_clip(name, 1, 0, 0.5))  # same seed, same clip
        others = [sources.synth_clip(name, 1, i, 0.5) for i in (1, 2)] + [sources.synth_clip(name, 2, 0, 0.5)]
        assert all(not np.allclose(a, b) for b in others), name  # varied within the class


# sounds that are narrow-band or low by nature (a test tone, mains hum, a fork after its strike, telephone tones,
# a heartbeat, a rumble); every other class must reach where the pinna cues live (front/behind, above/below)
LOW_OR_NARROW = {'Sine wave', 'Hum', 'Tuning fork', 'Dial tone', 'Busy signal', 'Heart sounds, heartbeat', 'Rumble'}


def test_bank_classes_reach_above_4khz():
    for name in set(sources.SYNTH_CLASSES) - LOW_OR_NARROW:
        fracs = []
        for i in range(4):
            p = np.abs(np.fft.rfft(sources.synth_clip(name, 1337, i, 1.0).astype(np.float64))) ** 2
            fracs.append(p[np.fft.rfftfreq(32000, 1 / 32000) > 4000].sum() / p.sum())
        assert np.median(fracs) > 0.005, (name, fracs)


def test_synth_run_writes_list_and_clips(tmp_path):
    out = tmp_path / 'bank'
    r = subprocess.run([sys.executable, 'sources.py', '--collection=synth', f'--out_dir={out}', '--clips_train=2',
                        '--clips_eval=1', '--clip_seconds=0.5'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = features.read_sources(str(out / 'sources.jsonl'))
    assert len(rows) == 3 * len(sources.SYNTH_CLASSES)
    assert sum(r['split'] == 'eval' for r in rows) == len(sources.SYNTH_CLASSES)
    assert not any(Path(json.loads(line)['path']).is_absolute() for line in (out / 'sources.jsonl').read_text().splitlines())
    x, sr = sf.read(rows[0]['path'])
    assert sr == 32000 and len(x) == 16000
    assert features.load_clip(rows[0]['path'], 32000, 0.5).shape == (16000,)


def _good(path, sr=22050, seconds=0.3, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), 0.1 * np.random.default_rng(seed).standard_normal(int(sr * seconds)), sr)


def test_manifest_with_bad_clips_skipped_and_counted(tmp_path):
    coll = tmp_path / 'coll'
    for i in range(6):
        _good(coll / f'dog/{i}.wav', seed=i)
    (coll / 'broken.wav').write_bytes(b'RIFF garbage')
    sf.write(str(coll / 'silent.wav'), np.zeros(4000), 16000)
    sf.write(str(coll / 'nan.wav'), np.full(4000, np.nan, np.float32), 16000, subtype='FLOAT')
    with open(coll / 'manifest.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['path', 'labels'])
        w.writerows([[f'dog/{i}.wav', 'Dog;Bark' if i % 2 else 'Dog'] for i in range(6)])
        w.writerows([['broken.wav', 'Dog'], ['silent.wav', 'Cat'], ['nan.wav', 'Cat'], ['missing.wav', 'Cat']])
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, 'sources.py', '--collection=manifest', f'--path={coll / "manifest.csv"}',
                        f'--out_dir={out}', '--clip_seconds=1.0', '--eval_fraction=0.5'],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ('broken.wav', 'silent.wav', 'nan.wav', 'missing.wav'):
        assert name in r.stderr  # the warning names the file
    rows = features.read_sources(str(out / 'sources.jsonl'))
    assert len(rows) == 6 and {tuple(x['labels']) for x in rows} == {('Dog',), ('Dog', 'Bark')}
    assert '4 bad clips skipped' in (out / 'summary.md').read_text()
    # the hash split is reproducible and does not depend on the list order
    again = [sources.hash_split(x['path'], 0.5, 1337) for x in reversed(rows)]
    assert [x['split'] for x in rows] == again[::-1]


def test_readers_audioset_esc50_folder_and_class_list(tmp_path):
    meta = tmp_path / 'as' / 'metadata'
    _good(tmp_path / 'as' / 'audio' / 'Yaaa.wav')
    meta.mkdir(parents=True)
    (meta / 'class_labels_indices.csv').write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/0bt9lr,"Dog"\n')
    (meta / 'eval.json').write_text(json.dumps({'data': [{'wav': '../audio/Yaaa.wav', 'labels': '/m/0bt9lr,/m/09x0r'}]}))
    rows = sources.read_audioset([str(meta / 'eval.json')])
    assert rows[0]['labels'] == ['Dog', 'Speech'] and rows[0]['split'] == 'eval' and Path(rows[0]['path']).is_file()
    esc = tmp_path / 'ESC-50'
    _good(esc / 'audio' / '1-100032-A-0.wav')
    (esc / 'meta').mkdir()
    (esc / 'meta' / 'esc50.csv').write_text('filename,fold,target,category,esc10,src_file,take\n'
                                            '1-100032-A-0.wav,5,0,dog,True,100032,A\n')
    rows = sources.read_esc50(str(esc))
    assert rows[0]['labels'] == ['Dog'] and rows[0]['split'] == 'eval'
    _good(tmp_path / 'folders' / 'Acoustic_guitar' / 'a.flac')
    assert sources.read_folder(str(tmp_path / 'folders'))[0]['labels'] == ['Acoustic guitar']
    (tmp_path / 'keep.txt').write_text('Dog\n')
    assert sources.read_class_list(str(tmp_path / 'keep.txt')) == ['Dog']
    assert sources.read_class_list(str(meta / 'class_labels_indices.csv')) == ['Speech', 'Dog']


def test_shared_manifest_reads():
    manifest = SHARED / 'data' / 'clips' / 'manifest.csv'
    if not manifest.is_file():
        pytest.skip('../shared clips not present')
    rows = sources.read_manifest(str(manifest))
    assert len(rows) > 300 and all(Path(r['path']).is_file() and r['labels'] for r in rows[:20])
    assert features.load_clip(rows[0]['path'], 32000, 1.0).shape == (32000,)
