"""features.py: parity with a librosa/numpy reference of the official front end, the waveform path, loading."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import features  # noqa: E402


def reference_features(wav):
    """The official front end written with librosa/numpy: (2, N) float32 -> (4, T, 128) float64."""
    import librosa
    W = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=128, fmin=50, fmax=14000)  # (128, 513)
    X = [librosa.stft(ch, n_fft=1024, hop_length=320, win_length=1024, window='hann', center=True,
                      pad_mode='reflect') for ch in wav]  # each (513, T)
    logmel = [10 * np.log10(np.maximum(W @ np.abs(x), 1e-10)) for x in X]
    ipd = np.angle(X[1]) - np.angle(X[0])
    return np.stack(logmel + [W @ np.cos(ipd), W @ np.sin(ipd)]).transpose(0, 2, 1)


def test_mel_matrix_equals_librosa():
    import librosa
    ref = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=128, fmin=50, fmax=14000).T
    ours = features.mel_filterbank().numpy()
    assert ours.shape == (513, 128)
    assert np.abs(ours - ref).max() < 1e-6


def test_banded_projection_equals_dense():
    x = torch.rand(3, 513, 7)
    x = x.transpose(1, 2)
    dense = x @ features.mel_filterbank()
    assert torch.allclose(features.mel_project(x), dense, atol=1e-6)


def test_white_noise_parity_all_channels():
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal((2, 32000))).astype(np.float32)
    ours = features.binaural_features(torch.from_numpy(wav)[None])[0].numpy()
    ref = reference_features(wav)
    assert ours.shape == ref.shape == (4, 101, 128)
    assert np.abs(ours - ref).max() < 1e-3


def test_clip_logmel_parity_near_peak():
    # a synthesised tonal clip with a wide dynamic range (harmonics + decaying envelope + faint noise)
    t = np.arange(64000) / 32000
    rng = np.random.default_rng(1)
    x = sum(np.sin(2 * np.pi * 220 * k * t) / k ** 2 for k in range(1, 20)) * np.exp(-2 * t)
    x = x + 1e-3 * rng.standard_normal(len(t))
    wav = np.stack([x, 0.5 * np.roll(x, 7)]).astype(np.float32)
    ours = features.binaural_features(torch.from_numpy(wav)[None])[0, :2].numpy()
    ref = reference_features(wav)[:2]
    near = ref > ref.max() - 40
    assert near.sum() > 1000
    assert np.abs(ours - ref)[near].max() < 1e-2


def test_shapes_and_zero_input():
    out = features.binaural_features(torch.zeros(2, 2, 3200))
    assert out.shape == (2, 4, 11, 128)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[:, :2], torch.full_like(out[:, :2], -100.0))  # clamp(1e-10) -> -100 dB
    # silence has phase 0 in both ears: cos IPD = 1 -> the mel row sums, sin IPD = 0
    assert torch.allclose(out[0, 2, 0], features.mel_filterbank().sum(0), atol=1e-6)
    assert out[:, 3].abs().max() == 0


def test_convolve_mix_matches_numpy():
    rng = np.random.default_rng(2)
    dry = rng.standard_normal((2, 2, 500)).astype(np.float32)
    rirs = rng.standard_normal((2, 2, 2, 64)).astype(np.float32)
    out = features.convolve_mix(torch.from_numpy(dry), torch.from_numpy(rirs), torch.tensor([1, 2])).numpy()
    conv = lambda b, s, c: np.convolve(dry[b, s], rirs[b, s, c])[:500]
    for c in range(2):
        assert np.allclose(out[0, c], conv(0, 0, c), atol=1e-4)  # one source: slot 2 ignored
        assert np.allclose(out[1, c], (conv(1, 0, c) + conv(1, 1, c)) / 2, atol=1e-4)


def _write(path, x, sr=44100):
    sf.write(str(path), x, sr)
    return str(path)


def test_load_clip_resample_normalise_loop(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], 1) * 0.3
    p = _write(tmp_path / 'a.wav', stereo)
    x = features.load_clip(p, 32000, 2.5)
    assert x.dtype == np.float32 and x.shape == (80000,)
    assert abs(20 * np.log10(np.sqrt(np.mean(x[:32000] ** 2))) + 14) < 0.05  # channel 0 kept, -14 dBFS
    assert np.allclose(x[32000:64000], x[:32000])  # looped
    z = features.load_clip(p, 32000, 2.5, pad='zero')
    assert np.all(z[32000:] == 0)


@pytest.mark.parametrize('kind', ['unreadable', 'empty', 'silent', 'nan'])
def test_bad_clips_raise_naming_the_file(tmp_path, kind):
    p = tmp_path / f'{kind}.wav'
    if kind == 'unreadable':
        p.write_bytes(b'not audio at all')
    elif kind == 'empty':
        _write(p, np.zeros(0, np.float32))
    elif kind == 'silent':
        _write(p, np.zeros(1000, np.float32))
    else:
        sf.write(str(p), np.full(1000, np.nan, np.float32), 32000, subtype='FLOAT')
    with pytest.raises(features.BadClip, match=str(p.name)):
        features.load_clip(str(p))


def test_qa_waveforms_and_readers(tmp_path):
    (tmp_path / 'src').mkdir()
    (tmp_path / 'rir' / 'binaural' / 'roomA').mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name in ('a', 'b'):
        _write(tmp_path / 'src' / f'{name}.wav', rng.standard_normal(16000) * 0.1, 16000)
    for k in range(2):
        np.save(tmp_path / 'rir' / 'binaural' / 'roomA' / f'{k}.npy', rng.standard_normal((2, 100)).astype(np.float32))
    lines = ['{"fname": "roomA/%d.npy", "sensor_position": "1,1.5,1", "source_position": "0,1.5,%d"}' % (k, k)
             for k in range(2)]
    (tmp_path / 'rir' / 'train_reverberation.jsonl').write_text('\n'.join(lines) + '\n')
    rirs = features.read_rirs(str(tmp_path / 'rir'), 'train')
    assert os.path.isfile(rirs[0]['path']) and rirs[0]['targets']['direction'] == ['left', 'front', 'below']
    (tmp_path / 'src' / 'sources.jsonl').write_text('{"path": "a.wav", "labels": ["Hum"], "split": "train"}\n')
    src = features.read_sources(str(tmp_path / 'src' / 'sources.jsonl'))
    assert src[0]['path'] == str(tmp_path / 'src' / 'a.wav')
    recs = [{'audio_id': 'a', 'reverb_id': 'roomA/0.npy', 'audio_id2': None, 'reverb_id2': None},
            {'audio_id': 'a.wav', 'reverb_id': 'roomA/0.npy', 'audio_id2': 'b', 'reverb_id2': 'roomA/1.npy'}]
    cache = features.AudioCache()
    wav = features.qa_waveforms(recs, str(tmp_path / 'src'), str(tmp_path / 'rir' / 'binaural'), cache, 'cpu',
                                clip_seconds=1.0)
    assert wav.shape == (2, 2, 32000)
    a, b = cache.clip(str(tmp_path / 'src' / 'a.wav'), 32000, 1.0), cache.clip(str(tmp_path / 'src' / 'b.wav'), 32000, 1.0)
    h0, h1 = cache.rir(rirs[0]['path']), cache.rir(rirs[1]['path'])
    assert np.allclose(wav[0, 1].numpy(), np.convolve(a, h0[1])[:32000], atol=1e-4)
    want = (np.convolve(a, h0[0])[:32000] + np.convolve(b, h1[0])[:32000]) / 2
    assert np.allclose(wav[1, 0].numpy(), want, atol=1e-4)
    assert features.binaural_features(wav).shape == (2, 4, 101, 128)


def test_one_silent_ear_matches_reference():
    # |X_L| = 0 everywhere: atan2 gives phase(L) = 0, so the IPD is phase(R) (the zero-bin guard)
    wav = np.stack([np.zeros(16000), 0.1 * np.random.default_rng(4).standard_normal(16000)]).astype(np.float32)
    ours = features.binaural_features(torch.from_numpy(wav)[None])[0].numpy()
    ref = reference_features(wav)
    assert np.abs(ours[1:] - ref[1:]).max() < 1e-3


def test_faint_clip_ipd_matches_reference():
    # |X_L| |X_R| underflows float32 (below 1e-38) although neither ear is 0: the IPD must still be the exact one
    wav = (1e-21 * np.random.default_rng(6).standard_normal((2, 16000))).astype(np.float32)
    ours = features.binaural_features(torch.from_numpy(wav)[None])[0].numpy()
    ref = reference_features(wav)
    assert np.abs(ours - ref).max() < 1e-3


def test_device_path_equals_cpu_path():
    # the GPU branch (torch.stft on the whole batch) and the CPU branch (scipy FFT in chunks) give the same numbers
    wav = 0.1 * torch.randn(3, 2, 20000)
    a = features.spectrum_features(features.stft(wav.reshape(6, -1)), 3)
    b = features.binaural_features(wav)
    assert a.shape == b.shape == (3, 4, 63, 128)
    assert (a[:, :2] - b[:, :2]).abs().max() < 1e-3 and (a[:, 2:] - b[:, 2:]).abs().max() < 1e-3


def test_qa_features_with_feature_cache(tmp_path):
    (tmp_path / 'src').mkdir()
    (tmp_path / 'bin' / 'r').mkdir(parents=True)
    _write(tmp_path / 'src' / 'a.wav', 0.1 * np.random.default_rng(5).standard_normal(8000), 16000)
    np.save(tmp_path / 'bin' / 'r' / '0.npy', np.eye(2, 10, dtype=np.float32))
    recs = [{'audio_id': 'a.wav', 'reverb_id': 'r/0.npy', 'audio_id2': None, 'reverb_id2': None, 'targets': [{'x': 1}]}]
    args = (recs, str(tmp_path / 'src'), str(tmp_path / 'bin'), features.AudioCache(), 'cpu')
    plain, t = features.qa_features(*args, clip_seconds=0.5)
    first, _ = features.qa_features(*args, clip_seconds=0.5, feature_dir=str(tmp_path / 'fc'))
    again, _ = features.qa_features(*args, clip_seconds=0.5, feature_dir=str(tmp_path / 'fc'))
    assert t == [[{'x': 1}]] and plain.shape == (1, 4, 51, 128) and len(list((tmp_path / 'fc').glob('*.npy'))) == 1
    assert torch.equal(first, again) and (first - plain).abs().max() < 0.1  # float16 storage
