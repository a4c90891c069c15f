"""Bad input of every kind gets one clear sentence and a non-zero exit, never code execution, a traceback, a damaged
run folder or a confident answer: crafted checkpoints, moved run folders, failed runs into an existing folder, bad
audio and IRs, impossible render settings, empty eval files; plus --help, progress lines and the plots.
One test per bad input, named for it. The tiny BAT run is trained once per module (~30 s on 2 CPU cores)."""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import common
import features
import script_hooks as hooks
from test_train_bat import TINY, make_tiny

pytestmark = pytest.mark.xdist_group('safety')  # its module fixture is built once, on one worker (test.sh)
ROOT = Path(__file__).resolve().parents[1]
SR = 32000


script = hooks.run_here  # `python <args>`, in this process: returncode, stdout, stderr


ok = hooks.run_ok  # the same, where the script must succeed: its stdout


def refused(p, *words):
    """A script stopped with a non-zero exit and one sentence (no traceback) holding every word."""
    assert p.returncode != 0, p.stdout[-2000:]
    assert 'Traceback' not in p.stderr, p.stderr[-3000:]
    for w in words:
        assert w in p.stderr, (w, p.stderr[-2000:])
    return p.stderr


def snapshot(folder):
    """Every file under folder with its bytes' hash (and nothing else may appear)."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A tiny tree as a user has it (QA, sources, IRs, encoder) and a tiny BAT run trained on it, in <root>/bat."""
    root = tmp_path_factory.mktemp('tree')
    qa, enc = make_tiny(root)
    out = ok('train_bat.py', f'--qa_dir={qa}', f'--encoder_ckpt={enc}', '--stage_iters=[1,1,2]',
             f'--out_dir={root / "bat"}', *TINY)
    return root, out


# -----------------------------------------------------------------------------
# 1. crafted checkpoints run no code

class CreatesFile:
    """Unpickling this calls open(target, 'w'): a harmless stand-in for any code a crafted checkpoint could run."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, 'w')


def crafted(path, target, kind='encoder'):
    """A file shaped like one of our checkpoints, carrying the payload."""
    obj = {'model': {'w': torch.zeros(2)}, 'model_args': {'dim': 8}, 'classes': ['a'], 'payload': CreatesFile(target)}
    if kind == 'bat':
        obj['base'] = {'encoder': 'x', 'tokenizer': 'y', 'llm': 'scratch'}
    torch.save(obj, path)
    return path


def test_crafted_checkpoint_really_runs_code_without_weights_only(tmp_path):
    """The test file is a real threat: the unsafe load creates the file (so the refusals below mean something)."""
    target = tmp_path / 'created_by_unpickling'
    torch.load(crafted(tmp_path / 'evil.pt', target), weights_only=False)
    assert target.exists()


@pytest.mark.parametrize('loader', ['load_weights', 'spatial_ast.load_checkpoint', 'spatial_ast.load_official',
                                    'spatial_ast.load_audiomae', 'bat.load_bat'])
def test_crafted_checkpoint_refused_by_loader(tmp_path, loader):
    import bat
    import spatial_ast
    target = tmp_path / 'created_by_unpickling'
    path = str(crafted(tmp_path / 'evil.pt', target, kind='bat' if loader == 'bat.load_bat' else 'encoder'))
    model = spatial_ast.SpatialAST(spatial_ast.ModelArgs(n_frames=64, dim=24, depth=1, n_heads=2, n_classes=3))
    call = {'load_weights': lambda: common.load_weights(path),
            'spatial_ast.load_checkpoint': lambda: spatial_ast.load_checkpoint(path),
            'spatial_ast.load_official': lambda: spatial_ast.load_official(model, path),
            'spatial_ast.load_audiomae': lambda: spatial_ast.load_audiomae(model, path, verbose=False),
            'bat.load_bat': lambda: bat.load_bat(path)}[loader]
    with pytest.raises(SystemExit, match=r'evil\.pt: refused to load: .*io\.open.*can run code'):
        call()
    assert not target.exists()


@pytest.mark.parametrize('entry', ['sample.py --ckpt', 'eval.py --ckpt', 'train_encoder.py --init_from',
                                   'train_bat.py --encoder_ckpt'])
def test_crafted_checkpoint_refused_by_script(tmp_path, entry, run):
    root, _ = run
    target = tmp_path / 'created_by_unpickling'
    evil = crafted(tmp_path / 'evil.pt', target, kind='bat' if '--ckpt' in entry else 'encoder')
    wav = tmp_path / 'x.wav'
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal((SR, 2)), SR)
    name, flag = entry.split()
    extra = {'sample.py': [f'--wav={wav}', '--question=Where?', '--device=cpu'],
             'eval.py': [f'--out_dir={tmp_path / "ev"}', '--device=cpu'],
             'train_encoder.py': [f'--out_dir={tmp_path / "enc"}', '--device=cpu'],
             'train_bat.py': [f'--qa_dir={root / "qa"}', f'--out_dir={tmp_path / "bat"}', *TINY]}[name]
    refused(script(name, f'{flag}={evil}', *extra), str(evil), 'refused to load')
    assert not target.exists()
    assert not (tmp_path / 'bat').exists() and not (tmp_path / 'enc').exists()  # nothing written either


def test_mae_style_checkpoint_with_namespace_loads(tmp_path):
    """The one allowed non-tensor type: the argparse.Namespace of settings MAE-style files carry."""
    path = tmp_path / 'mae.pth'
    torch.save({'model': {'blocks.0.norm1.weight': torch.ones(3)}, 'epoch': 3,
                'args': argparse.Namespace(lr=1e-3, model='vit_base', mask_ratio=0.8)}, path)
    ck = common.load_weights(str(path))
    assert ck['args'].model == 'vit_base' and common.checkpoint_kind(ck) == 'audiomae'


def test_checkpoint_with_numpy_object_refused(tmp_path):
    """Anything else outside the allow-list is refused, harmless or not (it is named)."""
    path = tmp_path / 'np.pt'
    torch.save({'model': {}, 'stat': np.float64(1.0)}, path)
    with pytest.raises(SystemExit, match='refused to load.*numpy'):
        common.load_weights(str(path))


def test_empty_checkpoint_file(tmp_path):
    (tmp_path / 'ckpt.pt').write_bytes(b'')
    with pytest.raises(SystemExit, match=r'ckpt\.pt: the file is empty \(0 bytes'):
        common.load_weights(str(tmp_path / 'ckpt.pt'))


def test_truncated_checkpoint(run, tmp_path):
    root, _ = run
    data = (root / 'bat' / 'ckpt.pt').read_bytes()
    (tmp_path / 'ckpt.pt').write_bytes(data[:len(data) // 2])
    p = script('sample.py', f'--ckpt={tmp_path / "ckpt.pt"}', '--wav=x.wav', '--question=Where?', '--device=cpu')
    refused(p, 'ckpt.pt: not a readable PyTorch file', 'truncated')


def test_text_file_as_checkpoint(tmp_path):
    (tmp_path / 'notes.pt').write_text('hello')
    with pytest.raises(SystemExit, match='not a readable PyTorch file'):
        common.load_weights(str(tmp_path / 'notes.pt'))


def test_encoder_checkpoint_given_as_ckpt(run):
    root, _ = run
    p = script('sample.py', f'--ckpt={root / "enc" / "ckpt.pt"}', '--wav=x.wav', '--question=Where?', '--device=cpu')
    refused(p, 'Spatial-AST encoder checkpoint (train_encoder.py), not a BAT checkpoint', '--encoder_ckpt=')


def test_bat_checkpoint_given_as_encoder(run):
    import spatial_ast
    root, _ = run
    with pytest.raises(SystemExit, match='a BAT checkpoint .*not a Spatial-AST encoder checkpoint'):
        spatial_ast.load_checkpoint(str(root / 'bat' / 'ckpt.pt'))


def test_bat_checkpoint_given_as_init_from(run, tmp_path):
    """train_encoder.py tells what it was given, from the file's keys, before it reads any data."""
    root, _ = run
    p = script('train_encoder.py', f'--init_from={root / "bat" / "ckpt.pt"}', f'--out_dir={tmp_path / "e"}',
               '--device=cpu')
    refused(p, 'is a BAT checkpoint (train_bat.py); expected')


def test_missing_sources_file(tmp_path):
    p = script('train_encoder.py', f'--sources={tmp_path / "none.jsonl"}', f'--out_dir={tmp_path / "e"}', '--device=cpu')
    refused(p, 'none.jsonl', '--sources=')

# -----------------------------------------------------------------------------
# 2. a run folder can move

def test_checkpoint_and_meta_paths_are_relative(run, tmp_path):
    root, _ = run
    ck = torch.load(root / 'bat' / 'ckpt.pt', weights_only=True)
    for p in [ck['qa_dir'], ck['audio_root'], ck['reverb_root'], ck['base']['encoder'], ck['base']['tokenizer']]:
        assert not os.path.isabs(p) and (root / 'bat' / p).exists(), p


def test_moved_run_evaluates(run, tmp_path):
    """The whole tree copied elsewhere and the original gone: eval.py and sample.py read the copy's files."""
    root, _ = run
    moved = tmp_path / 'elsewhere'
    shutil.copytree(root, moved)
    hidden = root.with_name(root.name + '_gone')
    root.rename(hidden)  # the original's files cannot be read while the copy is evaluated
    try:
        out = ok('eval.py', f'--ckpt={moved / "bat" / "ckpt.pt"}', f'--out_dir={tmp_path / "ev"}', '--device=cpu',
                 '--embedder=exact', '--plots=False')
        assert str(moved / 'qa' / 'eval.jsonl') in out and '| Random | P |' in out
        wav = tmp_path / 'x.wav'
        sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal((SR, 2)), SR)
        assert 'answer:' in ok('sample.py', f'--ckpt={moved / "bat" / "ckpt.pt"}', f'--wav={wav}',
                               '--question=Where is the sound?', '--device=cpu')
    finally:
        hidden.rename(root)


def test_moved_run_folder_alone_needs_overrides(run, tmp_path):
    """Only the run folder moved: a clear sentence names --encoder_ckpt; with the overrides it evaluates."""
    root, _ = run
    alone = tmp_path / 'deep' / 'bat'
    shutil.copytree(root / 'bat', alone)
    p = script('eval.py', f'--ckpt={alone / "ckpt.pt"}', f'--out_dir={tmp_path / "ev"}', '--device=cpu')
    refused(p, 'does not exist (moved?)', '--encoder_ckpt=')
    meta = json.loads((root / 'qa' / 'meta.json').read_text())
    out = ok('eval.py', f'--ckpt={alone / "ckpt.pt"}', f'--out_dir={tmp_path / "ev"}', '--device=cpu',
             '--embedder=exact', '--plots=False', f'--encoder_ckpt={root / "enc" / "ckpt.pt"}',
             f'--qa_dir={root / "qa"}', f'--audio_root={meta["audio_root"]}', f'--reverb_root={meta["reverb_root"]}')
    assert '| Random | P |' in out


def test_moved_qa_folder_missing_audio(run, tmp_path):
    """QA items whose audio is not where audio_root says: one sentence naming a missing file and the settings."""
    root, _ = run
    p = script('eval.py', f'--ckpt={root / "bat" / "ckpt.pt"}', f'--out_dir={tmp_path / "ev"}', '--device=cpu',
               f'--audio_root={tmp_path / "nowhere"}')
    refused(p, 'audio/IR file(s) named by the QA items do not exist', 'nowhere', '--audio_root=')

# -----------------------------------------------------------------------------
# 3. a failed run leaves a run folder as it was

def copy_run(root, tmp_path):
    folder = tmp_path / 'bat'
    shutil.copytree(root / 'bat', folder)
    return folder, snapshot(folder)


def overwrite_run(root, qa, folder):
    """train_bat.py told to start over (--overwrite=True) in the copied run folder, on the QA folder qa."""
    return script('train_bat.py', f'--qa_dir={qa}', f'--encoder_ckpt={root / "enc" / "ckpt.pt"}', f'--out_dir={folder}',
                  '--stage_iters=[1,1,1]', '--overwrite=True', *TINY)


def test_fresh_run_into_folder_with_checkpoint(run, tmp_path):
    root, _ = run
    folder, before = copy_run(root, tmp_path)
    p = script('train_bat.py', f'--qa_dir={root / "qa"}', f'--encoder_ckpt={root / "enc" / "ckpt.pt"}',
               f'--out_dir={folder}', '--stage_iters=[1,1,1]', *TINY)
    refused(p, 'already holds a run', '--init_from=resume', '--overwrite=True')
    assert snapshot(folder) == before


def test_failing_overwrite_run_leaves_folder_byte_identical(run, tmp_path):
    """overwrite=True, but the QA items name a clip that does not exist: refused before anything is written (the old
    run's tokenizer, checkpoint and cache stay as they were)."""
    root, _ = run
    folder, before = copy_run(root, tmp_path)
    qa = tmp_path / 'qa'
    shutil.copytree(root / 'qa', qa)
    recs = [json.loads(line) for line in (qa / 'train.jsonl').read_text().splitlines()]
    recs[3]['audio_id'] = 'clips/missing.wav'
    (qa / 'train.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    refused(overwrite_run(root, qa, folder), 'missing.wav')
    assert snapshot(folder) == before


def test_failing_run_with_broken_qa_line_leaves_folder_byte_identical(run, tmp_path):
    root, _ = run
    folder, before = copy_run(root, tmp_path)
    qa = tmp_path / 'qa'
    shutil.copytree(root / 'qa', qa)
    with open(qa / 'train.jsonl', 'a') as f:
        f.write('{"audio_id": "clips/0.wav"\n')
    refused(overwrite_run(root, qa, folder), 'train.jsonl:29: not valid JSON')
    assert snapshot(folder) == before


def test_resume_without_checkpoint(run, tmp_path):
    root, _ = run
    p = script('train_bat.py', f'--qa_dir={root / "qa"}', f'--encoder_ckpt={root / "enc" / "ckpt.pt"}',
               f'--out_dir={tmp_path / "empty"}', '--init_from=resume', *TINY)
    refused(p, '--init_from=resume but', 'does not exist (nothing to resume')
    assert not (tmp_path / 'empty').exists()
    p = script('train_encoder.py', f'--out_dir={tmp_path / "empty"}', '--init_from=resume', '--device=cpu')
    refused(p, '--init_from=resume but', 'nothing to resume')


def test_failing_run_leaves_no_temp_tokenizer(run, tmp_path):
    """The tokenizer is trained in a temp folder before the encoder loads; a run refused there removes it (in its
    own process, so that its exit handlers run as a user's would)."""
    root, _ = run
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    p = subprocess.run([sys.executable, 'train_bat.py', f'--qa_dir={root / "qa"}', f'--out_dir={tmp_path / "bat"}',
                        f'--encoder_ckpt={tmp_path / "missing.pt"}', *TINY], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, 'TMPDIR': str(tmp)})
    refused(p, 'missing.pt')
    assert 'tokenizer' in p.stdout  # it got as far as training one
    assert list(tmp.iterdir()) == []


def test_leftover_tmp_from_killed_save_removed_on_resume(run, tmp_path):
    root, _ = run
    folder, _ = copy_run(root, tmp_path)
    stale = folder / '.ckpt.pt.k1ll3d_x.tmp'
    stale.write_bytes(b'half a checkpoint')
    out = ok('train_bat.py', f'--qa_dir={root / "qa"}', f'--encoder_ckpt={root / "enc" / "ckpt.pt"}',
             f'--out_dir={folder}', '--stage_iters=[1,1,2]', '--init_from=resume', *TINY)
    assert not stale.exists() and 'interrupted' in out


def test_overwrite_replaces_run(run, tmp_path):
    root, _ = run
    folder, _ = copy_run(root, tmp_path)
    out = ok('train_bat.py', f'--qa_dir={root / "qa"}', f'--encoder_ckpt={root / "enc" / "ckpt.pt"}',
             f'--out_dir={folder}', '--stages=1', '--stage_iters=[1]', '--overwrite=True', *TINY)
    assert 'removed the previous run' in out
    assert torch.load(folder / 'ckpt.pt', weights_only=True)['config']['stages'] == 1


def test_resume_drops_log_rows_past_checkpoint(tmp_path):
    """train_encoder: rows logged after the last checkpoint by a run that was then killed are not kept twice."""
    from test_train_encoder import TINY as ENC_TINY, make_data, read_log
    sources, rd = make_data(tmp_path)
    common_args = ENC_TINY + [f'--sources={sources}', f'--render_dir={rd}', '--eval_interval=2',
                              f'--out_dir={tmp_path / "e"}']
    ok('train_encoder.py', *common_args, '--max_iters=2')
    log = tmp_path / 'e' / 'train_log.jsonl'
    with open(log, 'a') as f:  # a run that went on for two more steps and was killed before its next checkpoint
        f.write(json.dumps({'iter': 2, 'loss': 9.0}) + '\n' + json.dumps({'iter': 3, 'loss': 9.0}) + '\n')
    out = ok('train_encoder.py', *common_args, '--max_iters=4', '--init_from=resume')
    assert '2 rows past the checkpoint (iter 2) dropped' in out
    iters = [json.loads(line)['iter'] for line in log.read_text().splitlines()]
    assert iters == [0, 1, 2, 3] and read_log(tmp_path / 'e')[2]['loss'] != 9.0
    assert 'iter 3/4' in out and 'ETA' in out  # progress lines show the total and the time left

# -----------------------------------------------------------------------------
# 4. audio input

def wav(path, x, sr=SR, subtype=None):
    sf.write(str(path), np.asarray(x, np.float32), sr, **({'subtype': subtype} if subtype else {}))
    return str(path)


def noise(n, channels=2, scale=0.1, seed=0):
    return scale * np.random.default_rng(seed).standard_normal((n, channels) if channels > 1 else n)


def binaural_error(path):
    import sample
    with pytest.raises(SystemExit) as e:
        sample.read_binaural(str(path), 1.0, log=lambda m: None)
    return str(e.value)


def test_wav_with_zero_frames(tmp_path):
    assert 'empty (no samples)' in binaural_error(wav(tmp_path / 'a.wav', np.zeros((0, 2))))


def test_wav_too_short(tmp_path):
    msg = binaural_error(wav(tmp_path / 'a.wav', noise(5)))
    assert 'a.wav: too short (5 samples' in msg and 'at least 0.1 s' in msg


def test_wav_silent(tmp_path):
    assert 'silent' in binaural_error(wav(tmp_path / 'a.wav', np.zeros((SR, 2))))


def test_wav_with_one_nan_sample(tmp_path):
    x = noise(SR)
    x[100, 1] = np.nan
    assert '1 non-finite samples (NaN or inf)' in binaural_error(wav(tmp_path / 'a.wav', x, subtype='FLOAT'))


def test_wav_mono(tmp_path):
    msg = binaural_error(wav(tmp_path / 'a.wav', noise(SR, 1)))
    assert '1 channel(s); expected a binaural recording with 2 channels' in msg and '--clip=' in msg


def test_wav_three_channels(tmp_path):
    assert '3 channel(s)' in binaural_error(wav(tmp_path / 'a.wav', noise(SR, 3)))


def test_wav_not_audio(tmp_path):
    (tmp_path / 'a.wav').write_text('this is a text file')
    assert 'a.wav: not an audio file soundfile can read' in binaural_error(tmp_path / 'a.wav')


def test_wav_missing(tmp_path):
    assert 'no such file' in binaural_error(tmp_path / 'nope.wav')


def test_wav_quiet_copy_gets_the_same_input(tmp_path):
    """Level normalisation: a -40 dB copy reaches the model as the same waveform; one gain for both ears keeps the
    interaural level difference; the gain is reported."""
    import sample
    x = noise(SR // 2) * np.array([1.0, 0.25])  # the right ear 12 dB quieter
    notes = []
    a = sample.read_binaural(wav(tmp_path / 'loud.wav', x, subtype='FLOAT'), 1.0, log=notes.append)
    b = sample.read_binaural(wav(tmp_path / 'quiet.wav', x / 100, subtype='FLOAT'), 1.0, log=notes.append)
    assert np.allclose(a, b, atol=1e-5)
    rms = np.sqrt((a ** 2).mean(1))
    assert 20 * np.log10(rms[0] / rms[1]) == pytest.approx(12.04, abs=0.05)
    assert 20 * np.log10(np.sqrt((a ** 2).mean())) == pytest.approx(-14, abs=0.05)
    assert any('level-normalised by +' in n and 'one gain for both ears' in n for n in notes)
    assert any('looped 2.0 times' in n for n in notes)  # 0.5 s to the 1 s the model heard: said, not hidden


def test_sample_script_refuses_nan_wav_without_answer(run, tmp_path):
    root, _ = run
    x = noise(SR)
    x[7] = np.nan
    p = script('sample.py', f'--ckpt={root / "bat" / "ckpt.pt"}', f'--wav={wav(tmp_path / "n.wav", x, subtype="FLOAT")}',
               '--question=Where is the sound?', '--device=cpu')
    refused(p, 'n.wav', 'non-finite')
    assert 'answer:' not in p.stdout


def test_sample_script_reports_gain(run, tmp_path):
    root, _ = run
    out = ok('sample.py', f'--ckpt={root / "bat" / "ckpt.pt"}', f'--wav={wav(tmp_path / "q.wav", noise(SR) / 100)}',
             '--question=Where is the sound?', '--device=cpu')
    assert 'level-normalised by +' in out and 'answer:' in out


def clip_rir_error(tmp_path, clip=None, rir=None):
    import sample
    clip = clip or wav(tmp_path / 'dry.wav', noise(SR, 1))
    if rir is None:
        rir = tmp_path / 'ir.npy'
        np.save(rir, noise(100).T.astype(np.float32))
    with pytest.raises(SystemExit) as e:
        sample.place_clip(str(clip), str(rir), 1.0, 'cpu')
    return str(e.value)


def test_clip_stereo(tmp_path):
    msg = clip_rir_error(tmp_path, clip=wav(tmp_path / 's.wav', noise(SR)))
    assert 's.wav: 2 channels; --clip= expects a dry mono clip' in msg


def test_clip_silent(tmp_path):
    assert 'silent' in clip_rir_error(tmp_path, clip=wav(tmp_path / 'z.wav', np.zeros(SR)))


def test_rir_is_a_wav(tmp_path):
    msg = clip_rir_error(tmp_path, rir=wav(tmp_path / 'ir.wav', noise(100)))
    assert 'ir.wav: not a NumPy .npy array' in msg and '(2, L)' in msg


def test_rir_wrong_shape(tmp_path):
    np.save(tmp_path / 'ir.npy', noise(100).astype(np.float32))  # (100, 2): transposed
    assert 'expected a binaural IR of shape (2, L) (left, right), got (100, 2)' in clip_rir_error(
        tmp_path, rir=tmp_path / 'ir.npy')


def test_rir_integer_dtype(tmp_path):
    np.save(tmp_path / 'ir.npy', np.ones((2, 50), np.int16))
    assert 'IR of dtype int16; expected float32 or float64' in clip_rir_error(tmp_path, rir=tmp_path / 'ir.npy')


def test_rir_all_zeros(tmp_path):
    np.save(tmp_path / 'ir.npy', np.zeros((2, 50), np.float32))
    assert 'IR is all zeros' in clip_rir_error(tmp_path, rir=tmp_path / 'ir.npy')


def test_rir_with_nan(tmp_path):
    h = noise(50).T.astype(np.float32)
    h[0, 3] = np.nan
    np.save(tmp_path / 'ir.npy', h)
    assert 'non-finite' in clip_rir_error(tmp_path, rir=tmp_path / 'ir.npy')


def test_rir_pickled_object(tmp_path):
    """A .npy holding a pickled object (which could run code) is not unpickled."""
    np.save(tmp_path / 'ir.npy', np.array([{'a': 1}], dtype=object), allow_pickle=True)
    assert 'not a NumPy .npy array' in clip_rir_error(tmp_path, rir=tmp_path / 'ir.npy')


def test_source_clip_too_short(tmp_path):
    """The source readers (sources.py, training) refuse it too, as a BadClip naming the file."""
    with pytest.raises(features.BadClip, match=r'c\.wav: too short \(800 samples'):
        features.load_clip(wav(tmp_path / 'c.wav', noise(800, 1)), SR, 1.0)

# -----------------------------------------------------------------------------
# 5. other bad settings and files

def test_empty_eval_file(run, tmp_path):
    root, _ = run
    (tmp_path / 'eval.jsonl').write_text('')
    p = script('eval.py', f'--ckpt={root / "bat" / "ckpt.pt"}', f'--eval_file={tmp_path / "eval.jsonl"}',
               f'--out_dir={tmp_path / "ev"}', '--device=cpu')
    refused(p, 'eval.jsonl holds no QA items')


def test_missing_eval_file(run, tmp_path):
    root, _ = run
    p = script('eval.py', f'--ckpt={root / "bat" / "ckpt.pt"}', f'--eval_file={tmp_path / "nope.jsonl"}',
               f'--out_dir={tmp_path / "ev"}', '--device=cpu')
    refused(p, 'no eval file', 'nope.jsonl')


def render_error(**kw):
    import render
    args = dict(room_min=[3.0, 2.5, 3.0], room_max=[16.0, 6.0, 20.0], rt60_min=0.2, rt60_max=1.5)
    args.update(kw)
    with pytest.raises(ValueError) as e:
        render.check_ranges(**args)
    return str(e.value)


def test_render_room_max_below_room_min():
    assert 'room_max [2.0, 6.0, 20.0] must be at least room_min' in render_error(room_max=[2.0, 6.0, 20.0])


def test_render_room_min_two_numbers():
    assert 'room_min must be 3 numbers [Lx, Ly, Lz]' in render_error(room_min=[3.0, 2.5])


def test_render_room_side_too_small():
    assert 'each side must be at least 1.2 m' in render_error(room_min=[0.5, 2.5, 3.0])


def test_render_rt60_min_zero():
    assert 'expected 0 < rt60_min <= rt60_max' in render_error(rt60_min=0.0)


def test_render_rt60_min_above_max():
    assert 'expected 0 < rt60_min <= rt60_max' in render_error(rt60_min=2.0, rt60_max=1.0)


def test_render_unreachable_rt60_range():
    msg = render_error(room_max=[5.0, 3.0, 5.0], rt60_min=8.0, rt60_max=9.0)
    assert 'cannot be reached by rooms' in msg and 'they give 0.016-' in msg


def test_render_partly_unreachable_rt60_reported(tmp_path):
    """Long RT60s that the small rooms of the range cannot reach: rendered, but said (stdout and summary.md)."""
    import render
    assert render.check_ranges([3.0, 2.5, 3.0], [16.0, 6.0, 20.0], 0.2, 1.5)[1] > 1.5  # the default: all reach
    p = script('render.py', '--n_train_rooms=4', '--n_eval_rooms=0', '--irs_per_room=1', '--ir_seconds=0.05',
               '--max_order=0', '--head=none', '--tail=False', '--air_absorption=False', '--device=cpu',
               '--room_max=[4.0, 3.0, 4.0]', '--rt60_min=4.5', '--rt60_max=6.0', f'--out_dir={tmp_path}')
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'rooms could not reach the RT60 drawn for them' in p.stdout
    assert 'RT60 warning' in (tmp_path / 'summary.md').read_text()


def test_render_script_bad_range_exits_with_one_sentence(tmp_path):
    refused(script('render.py', '--rt60_min=0', f'--out_dir={tmp_path}', '--device=cpu'), 'render: RT60 range')
    assert not any(tmp_path.iterdir())

# -----------------------------------------------------------------------------
# 6. --help, progress, plots

SCRIPTS = ['render.py', 'sources.py', 'make_qa.py', 'train_encoder.py', 'train_bat.py', 'eval.py', 'sample.py']


@pytest.mark.parametrize('name', SCRIPTS)
def test_help_on_every_script(name):
    first_doc_line = (ROOT / name).read_text().split('"""')[1].strip().splitlines()[0]
    p = script(name, '--help')
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith(first_doc_line) and 'settings (--key=value' in p.stdout
    assert "--device=" in p.stdout
    assert script(name, '-h').stdout == p.stdout


def test_help_lists_defaults_and_comments():
    out = script('train_bat.py', '--help').stdout
    assert "--overwrite=False" in out and 'a fresh run may replace the run already in out_dir' in out
    assert "--stage_iters=[20000, 20000, 40000]" in out and 'iterations per stage' in out
    out = script('train_encoder.py', '--help').stdout  # settings inside `if __name__ == '__main__':`
    assert "--ipd_scale=1.0" in out and "--n_mels=128" in out


def test_eval_progress_about_ten_lines(capsys):
    p = common.Progress(4500, 'eval: generated', unit='answers', share=0.1)
    for _ in range(0, 4500, 64):
        p.update(min(64, 4500 - p.done))
    lines = capsys.readouterr().out.splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].startswith('eval: generated 4500/4500 (100%)') and 'ETA' in lines[0]


def test_training_lines_show_total_and_eta(run):
    _, out = run
    assert 'stage 3 iter 2/2 (all stages 4/4)' in out and 'ms/iter, ETA 0s' in out


def test_plot_labels_percentages_and_panels(tmp_path):
    import eval as ev
    assert [ev.octant_name(k) for k in (0, 1, 2, 7)] == ['L-F-U', 'R-F-U', 'L-B-U', 'R-B-D']
    items = [{'type': 'DOA', 'reference': 'left, front, above; 2m', 'prediction': p}
             for p in ('left, front, above; 2m', 'left, front, above; 3m', 'right, front, above; 2m', 'no idea')]
    items += [{'type': 'MIXUP_SINGLE_DOA', 'reference': 'right, behind, below; 1m', 'prediction': 'left, behind, below; 1m'}]
    conf = ev.direction_confusion([it for it in items if it['type'] == 'DOA'])
    pct = ev.row_percent(conf)
    assert conf[0].tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 1] and pct[0].tolist() == [50, 25, 0, 0, 0, 0, 0, 0, 25]
    assert ev.direction_confusion(items[4:])[7, 6] == 1  # D counted in its own panel
    paths = ev.save_plots(items, str(tmp_path))
    assert [Path(p).name for p in paths] == ['direction_confusion.png', 'distance.png']
    assert all(Path(p).stat().st_size > 1000 for p in paths)
