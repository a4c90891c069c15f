"""
The audio front end of Spatial-AST, and the waveform path that feeds it.

- `binaural_features(wav)`: (B, 2, N) waveform -> (B, 4, T, 128) = [log-mel L, log-mel R, mel cos IPD, mel sin IPD],
  exactly steps 1-10 of the official front end (docs/conventions.md): STFT n_fft 1024, periodic Hann 1024, hop 320, centred
  with reflect padding; magnitude (not power); librosa's Slaney mel matrix (128 bins, 50-14000 Hz); 10*log10(clamp(., 1e-10));
  cos/sin of the interaural phase difference on the full STFT, each through the same mel matrix.
  BatchNorm, the time resize to 1024 frames and the conv stem live in spatial_ast.py.
- the waveform path: dry clips (mono, 32 kHz, -14 dBFS) FFT-convolved with their binaural IRs, cropped, and averaged over
  the sources of an item ((w1 + w2) / 2, as the official SpatialSoundQA loader), batched on the tensor's device.
- loading and checking clips, IRs and the record files of sources.py / render.py.

No config and no main: this is a library that the stage scripts import (like the model files).
On a GPU everything is torch on the tensor's device. On CPU the front end runs in numpy/scipy (pocketfft) over chunks
of frames in a small thread pool: faster here than torch's CPU FFT, and immune to OpenMP stalls on shared cores.
Speed: `python bench/bench_features.py` compares with a librosa/numpy reference in one run.
Resampling uses scipy.signal.resample_poly (polyphase, as the official loader).
"""
import math
import os
from fractions import Fraction

import numpy as np
import soundfile as sf
import torch

import common

sample_rate = 32000  # Hz, the official rate
n_fft = 1024         # 32 ms window
hop = 320            # 10 ms at 32 kHz
n_mels = 128
fmin, fmax = 50.0, 14000.0  # Hz, the official mel range
target_dbfs = -14.0  # dry sources are RMS-normalised to this (official --audio_normalize)
min_seconds = 0.1    # shorter clips/recordings are refused: looped up to the clip length they are a buzz, not a sound
silent_rms = 1e-5    # RMS below this (-100 dBFS) is silence: nothing to hear, and normalising would amplify dither
mel_chunk = 16       # mel bins per block of the banded projection (a speed knob, any value gives the same numbers)
chunk_frames = 256   # CPU path: frames (of all the clips together) per work item: big enough to amortise ~40 us of
                     # Python calls per item, small enough for its arrays to stay in cache
max_gemm_rows = 64   # CPU path: rows per BLAS call of the mel projection (see _mel_project_np)
n_bins = n_fft // 2 + 1

# -----------------------------------------------------------------------------
# mel filterbank (librosa's Slaney mel scale + Slaney area normalisation, our own code so librosa is not a dependency)

def _hz_to_mel(f):
    # Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    logstep = math.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax):
    """(n_fft // 2 + 1, n_mels) float32 tensor: triangles on the Slaney mel scale, each with unit area (in Hz)."""
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    width = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_bins)
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # Slaney: equal area per filter
    return torch.from_numpy(weights.astype(np.float32).T.copy())


_band_cache = {}


def _mel_bands(device, dtype):
    """The mel matrix cut into blocks of `mel_chunk` filters, each with only the FFT bins it touches.
    Each bin feeds at most two filters, so this does a fraction of the dense projection's work.
    device 'np' gives numpy blocks."""
    key = (str(device), dtype)
    if key not in _band_cache and device == 'np':
        _band_cache[key] = [(k0, k1, w.cpu().numpy()) for k0, k1, w in _mel_bands('cpu', torch.float32)]
    if key not in _band_cache:
        w = mel_filterbank()  # (513, 128)
        bands = []
        for m0 in range(0, w.shape[1], mel_chunk):
            m1 = min(m0 + mel_chunk, w.shape[1])
            nz = torch.nonzero(w[:, m0:m1].sum(1) > 0).flatten()
            k0, k1 = int(nz[0]), int(nz[-1]) + 1
            bands.append((k0, k1, w[k0:k1, m0:m1].to(device, dtype)))  # (k, m)
        _band_cache[key] = bands
    return _band_cache[key]


def mel_project(x):
    """(..., 513) linear-frequency -> (..., 128) mel, via the banded matrix (same numbers as x @ W)."""
    return torch.cat([x[..., k0:k1] @ w for k0, k1, w in _mel_bands(x.device, x.dtype)], dim=-1)

# -----------------------------------------------------------------------------
# features

_hann = {}


def _hann_np():
    if 'w' not in _hann:
        _hann['w'] = torch.hann_window(n_fft, periodic=True).numpy()
    return _hann['w']


def _frames_np(x):
    """(M, N) float32 array -> (M, T, n_fft) view of centred, reflect-padded frames (one copy of the signal)."""
    p, N = n_fft // 2, x.shape[1]
    if N <= p:  # shorter than half a window: numpy reflects repeatedly (librosa does the same)
        padded = np.pad(x, ((0, 0), (p, p)), mode='reflect')
        return np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]
    padded = np.empty((x.shape[0], N + 2 * p), np.float32)  # np.pad(mode='reflect') is several times slower
    padded[:, p:p + N] = x
    padded[:, :p] = x[:, 1:p + 1][:, ::-1]  # mirror without repeating the edge sample
    padded[:, p + N:] = x[:, N - p - 1:N - 1][:, ::-1]
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]


def stft(x):
    """(M, N) float32 -> (M, T, 513) complex64, T = N // hop + 1: periodic Hann, centred, reflect padding (torch)."""
    window = torch.hann_window(n_fft, periodic=True, device=x.device)
    X = torch.stft(x, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                   pad_mode='reflect', return_complex=True)  # (M, 513, T), a transposed view of (M, T, 513)
    return X.transpose(1, 2)


def binaural_features(wav):
    """(B, 2, N) float waveform (channel 0 = left) -> (B, 4, T, 128), T = N // hop + 1, on wav.device."""
    B, C, N = wav.shape
    assert C == 2, f'expected a binaural (B, 2, N) waveform, got {tuple(wav.shape)}'
    x = wav.reshape(B * 2, N).float()
    if x.device.type != 'cpu':
        return spectrum_features(stft(x), B)
    # CPU: numpy/scipy on chunks of frames spread over a small thread pool. A chunk's arrays stay in cache through
    # every step; scipy's FFT is faster here than torch's; and torch's OpenMP barriers stall badly (x100 measured)
    # when the cores are shared with other processes.
    frames = _frames_np(x.detach().numpy())  # (2B, T, n_fft) view
    T = frames.shape[1]
    step = max(8, chunk_frames // B)  # frames per chunk
    out = np.empty((B, 4, T, n_mels), np.float32)
    work = lambda t0: _chunk_features_np(frames[:, t0:t0 + step], out[:, :, t0:t0 + step])
    list(_pool().map(work, range(0, T, step)))
    return torch.from_numpy(out)


_pools = {}


def _pool():
    from concurrent.futures import ThreadPoolExecutor
    key = (os.getpid(), max(1, torch.get_num_threads()))  # a forked worker (DataLoader) must not reuse the parent's
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(key[1], thread_name_prefix='features')
    return _pools[key]


def _chunk_features_np(frames, out):
    """frames (2B, f, n_fft) rows L0, R0, L1, ... -> writes out (B, 4, f, 128); the numpy twin of spectrum_features.
    Steps write into arrays made once per chunk (out=): few temporaries and few passes over memory."""
    import scipy.fft
    B, f = out.shape[0], frames.shape[1]
    windowed = np.multiply(frames, _hann_np(), out=np.empty(frames.shape, np.float32))
    spec = scipy.fft.rfft(windowed, axis=-1).reshape(B, 2, f, n_bins)  # complex64 (pocketfft keeps float32)
    # all the bins, although the mel weights of 13% of them are 0: numpy's SIMD loops need contiguous arrays
    lin = np.empty((B, 4, f, n_bins), np.float32)  # |X_L|, |X_R|, cos IPD, sin IPD on the FFT bins
    np.abs(spec, out=lin[:, :2])  # numpy's SIMD complex abs beats sqrt(re^2 + im^2) on strided views
    _ipd_np(spec, lin[:, :2], lin[:, 2:])
    # the four mel projections at once, straight into out; then 10 log10 of the first two in place
    _mel_project_np(lin, out)
    logmel = out[:, :2]
    np.maximum(logmel, 1e-10, out=logmel)
    np.log10(logmel, out=logmel)
    logmel *= 10.0


def _ipd_np(spec, mag, trig):
    """cos and sin of phase(R) - phase(L) into trig (B, 2, f, bins), without angles:
    X_R conj(X_L) = |X_R| |X_L| (cos IPD + i sin IPD)."""
    cross = np.conjugate(spec[:, 0])
    np.multiply(spec[:, 1], cross, out=cross)
    inv = np.multiply(mag[:, 0], mag[:, 1])
    if inv.min() < np.finfo(np.float32).tiny:  # a zero (or underflowing) product: take each ear's phase on its own
        return _ipd_unit_phasors(spec, mag, trig)
    np.divide(1.0, inv, out=inv)  # (np.reciprocal is slower) then multiplies: cheaper than two strided divides
    np.multiply(cross.real, inv, out=trig[:, 0])
    np.multiply(cross.imag, inv, out=trig[:, 1])


def _ipd_unit_phasors(spec, mag, trig):
    # the slow, exact path: a unit phasor per ear, with phase 0 where the magnitude is 0 (atan2(0, 0) = 0)
    u = np.where(mag > 0, spec / np.where(mag > 0, mag, np.float32(1)), np.complex64(1))
    cross = u[:, 1] * np.conjugate(u[:, 0])
    trig[:, 0], trig[:, 1] = cross.real, cross.imag


def _mel_project_np(lin, out):
    """lin (B, 4, f, n_bins) -> out (B, 4, f, n_mels) with the banded matrix, each block written in place.
    numpy runs one BLAS product per (clip, channel) and block of max_gemm_rows frames: OpenBLAS keeps products that
    small on the calling thread, while larger ones go to its own threads, which stall (x100) when the cores are shared."""
    for t0 in range(0, lin.shape[2], max_gemm_rows):
        rows = slice(t0, t0 + max_gemm_rows)
        m0 = 0
        for k0, k1, w in _mel_bands('np', np.float32):
            np.matmul(lin[:, :, rows, k0:k1], w, out=out[:, :, rows, m0:m0 + w.shape[1]])
            m0 += w.shape[1]


def spectrum_features(X, B):
    """(2B, T, 513) complex STFT (rows L0, R0, L1, ...) -> (B, 4, T, 128) = [log-mel L, log-mel R, cos IPD, sin IPD]."""
    X = torch.view_as_real(X).view(B, 2, -1, n_fft // 2 + 1, 2)  # (B, 2, T, 513, re/im)
    re, im = X[..., 0], X[..., 1]
    mag = torch.addcmul(re * re, im, im).sqrt_()  # (B, 2, T, 513): magnitude, not power
    logmel = mel_project(mag).clamp_(min=1e-10).log10_().mul_(10.0)  # (B, 2, T, 128)
    # cos/sin of phase(R) - phase(L) need no angles: X_R * conj(X_L) / (|X_R| |X_L|)
    rL, iL, rR, iR = re[:, 0], im[:, 0], re[:, 1], im[:, 1]  # (B, T, 513)
    den = mag[:, 0] * mag[:, 1]
    ipd = torch.stack([torch.addcmul(rR * rL, iR, iL), torch.addcmul(iR * rL, rR, iL, value=-1.0)], dim=1)
    ipd.mul_(den.clamp(min=1e-30).reciprocal_()[:, None])  # (B, 2, T, 513)
    if den.amin() == 0:  # a zero bin has phase 0 (atan2(0, 0) = 0), so its IPD is minus (or plus) the other ear's phase
        ipd = _fix_zero_bins(ipd, X, mag, den == 0)
    return torch.cat([logmel, mel_project(ipd)], dim=1)  # (B, 4, T, 128)


def _fix_zero_bins(ipd, X, mag, zero):
    # unit phasors with 1 where the magnitude is 0; IPD phasor = u_R * conj(u_L)
    u = torch.where(mag[..., None] > 0, X / mag.clamp(min=1e-30)[..., None], torch.tensor([1.0, 0.0], device=X.device))
    uL, uR = u[:, 0], u[:, 1]
    cos = uR[..., 0] * uL[..., 0] + uR[..., 1] * uL[..., 1]
    sin = uR[..., 1] * uL[..., 0] - uR[..., 0] * uL[..., 1]
    return torch.where(zero[:, None], torch.stack([cos, sin], dim=1), ipd)

# -----------------------------------------------------------------------------
# clips and IRs

class BadClip(ValueError):
    """A clip, recording or IR that must not be used (unreadable, empty, too short, silent, non-finite, wrong shape).
    The message names the file and what was expected."""


def _resample(x, sr_in, sr_out):
    # polyphase (the official loader uses scipy.signal.resample_poly too), imported only when needed
    if sr_in == sr_out:
        return x
    from scipy.signal import resample_poly
    ratio = Fraction(sr_out, sr_in)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def fit_length(x, n, pad='loop'):
    """Crop to n samples, or extend by repeating the clip ('loop') or with zeros ('zero', as the official loader)."""
    if len(x) >= n:
        return x[:n]
    if pad == 'loop':
        return np.tile(x, -(-n // len(x)))[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def read_audio(path):
    """An audio file -> (np.float32 (N, C), rate). Raises BadClip naming the file: missing, not audio, empty,
    non-finite."""
    if not os.path.isfile(path):
        raise BadClip(f'{path}: no such file')
    try:
        data, sr = sf.read(path, dtype='float32', always_2d=True)
    except Exception as e:  # soundfile raises several types for broken files
        raise BadClip(f'{path}: not an audio file soundfile can read ({type(e).__name__}: {e}); '
                      f'expected WAV, FLAC or OGG') from None
    if data.size == 0:
        raise BadClip(f'{path}: empty (no samples)')
    if not np.isfinite(data).all():
        raise BadClip(f'{path}: {int((~np.isfinite(data)).sum())} non-finite samples (NaN or inf); '
                      f'expected finite audio')
    return data, sr


def check_level_and_length(path, x, sr):
    """RMS of x (any shape, rate sr); raises BadClip if it is shorter than min_seconds or silent."""
    n = x.shape[0]
    if n < min_seconds * sr:
        raise BadClip(f'{path}: too short ({n} samples = {1000 * n / sr:.1f} ms); at least {min_seconds} s expected')
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms < silent_rms:
        raise BadClip(f'{path}: silent (RMS {rms:.2e}, below -100 dBFS); expected a recording with sound in it')
    return rms


def load_clip(path, sample_rate=sample_rate, clip_seconds=10.0, pad='loop'):
    """Any rate / channel count -> np.float32 (N,) mono (channel 0, as the official loader), resampled,
    RMS -14 dBFS, looped or zero-padded / cropped to N = sample_rate * clip_seconds. Raises BadClip."""
    data, sr = read_audio(path)
    x = _resample(data[:, 0], sr, sample_rate)
    rms = check_level_and_length(path, x, sample_rate)
    x = x * np.float32(10 ** (target_dbfs / 20) / rms)
    return fit_length(x, int(round(sample_rate * clip_seconds)), pad).astype(np.float32)


def load_binaural(path, sample_rate=sample_rate, clip_seconds=10.0, log=print):
    """A 2-channel recording (left, right) -> np.float32 (2, N): resampled, level-normalised with ONE gain for both
    ears (RMS over both to -14 dBFS, as dry sources are: the interaural level difference stays), looped / cropped to
    N = sample_rate * clip_seconds. Each step that changes the input is logged; raises BadClip."""
    data, sr = read_audio(path)
    if data.shape[1] != 2:
        raise BadClip(f"{path}: {data.shape[1]} channel(s); expected a binaural recording with 2 channels (left, "
                      f"right). For a mono clip give --clip= with an impulse response --rir=")
    if sr != sample_rate:
        data = np.stack([_resample(data[:, c], sr, sample_rate) for c in range(2)], 1)
        log(f"note: {path} is {sr} Hz; resampled to {sample_rate} Hz")
    rms = check_level_and_length(path, data, sample_rate)
    gain = 10 ** (target_dbfs / 20) / rms
    log(f"note: {path} level-normalised by {20 * math.log10(gain):+.1f} dB (one gain for both ears) to "
        f"{target_dbfs:g} dBFS RMS")
    n = int(round(sample_rate * clip_seconds))
    if len(data) < n:
        log(f"note: {path} is {len(data) / sample_rate:.2f} s; looped {n / len(data):.1f} times to the "
            f"{clip_seconds:g} s the model was trained on")
    elif len(data) > n:
        log(f"note: {path} is {len(data) / sample_rate:.2f} s; its first {clip_seconds:g} s are used")
    x = np.stack([fit_length(data[:, c] * np.float32(gain), n) for c in range(2)])
    return np.ascontiguousarray(x, dtype=np.float32)


def load_rir(path):
    """(2, L) float32 binaural IR (channel 0 = left ear) from a .npy file; checks type, shape, finiteness, silence.
    Raises BadClip (a ValueError) naming the file."""
    if not os.path.isfile(path):
        raise BadClip(f'{path}: no such IR file')
    try:
        h = np.load(path, allow_pickle=False)  # a pickled .npy could run code
    except Exception as e:
        raise BadClip(f'{path}: not a NumPy .npy array ({type(e).__name__}); expected a (2, L) float array '
                         f'written by numpy.save (an IR in a WAV must be converted first)') from None
    if not isinstance(h, np.ndarray) or not np.issubdtype(h.dtype, np.floating):
        raise BadClip(f'{path}: IR of dtype {getattr(h, "dtype", type(h).__name__)}; expected float32 or float64 '
                         f'samples of shape (2, L)')
    if h.ndim != 2 or h.shape[0] != 2 or h.shape[1] == 0:
        raise BadClip(f'{path}: expected a binaural IR of shape (2, L) (left, right), got {h.shape}')
    if not np.isfinite(h).all():
        raise BadClip(f'{path}: IR has non-finite values (NaN or inf)')
    if not np.abs(h).max() > 0:
        raise BadClip(f'{path}: IR is all zeros (it would silence the source)')
    return h.astype(np.float32, copy=False)


class AudioCache:
    """Memoises clips and IRs, so a training loop reads and resamples each file once."""

    def __init__(self, pad='loop'):
        self.pad, self.clips, self.rirs = pad, {}, {}

    def clip(self, path, sample_rate=sample_rate, clip_seconds=10.0):
        key = (path, sample_rate, clip_seconds)
        if key not in self.clips:
            self.clips[key] = load_clip(path, sample_rate, clip_seconds, self.pad)
        return self.clips[key]

    def rir(self, path):
        if path not in self.rirs:
            self.rirs[path] = load_rir(path)
        return self.rirs[path]

# -----------------------------------------------------------------------------
# waveform path (batched, on the tensors' device)

def _fast_fft_size(n):
    """Smallest 2^a 3^b 5^c >= n (FFTs of such sizes are fast everywhere)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def convolve_mix(dry, rirs, n_sources):
    """dry (B, S, N), rirs (B, S, 2, L), n_sources (B,) in 1..S -> (B, 2, N): each source convolved with its own IR
    (full linear convolution by FFT), cropped to N, averaged over the item's real sources; unused slots are ignored."""
    B, S, N = dry.shape
    L = rirs.shape[-1]
    nfft = _fast_fft_size(N + L - 1)  # no circular wrap into the first N samples
    spec = torch.fft.rfft(dry.float(), nfft)[:, :, None] * torch.fft.rfft(rirs.float(), nfft)  # (B, S, 2, F)
    wet = torch.fft.irfft(spec, nfft)[..., :N]  # (B, S, 2, N)
    n = n_sources.to(dry.device).long().view(B, 1)
    weight = (torch.arange(S, device=dry.device).view(1, S) < n).float() / n  # (B, S): 1/n for real slots
    return (wet * weight[:, :, None, None]).sum(1)


def resolve_audio(audio_root, audio_id):
    """Official audio_id has no extension; ours keeps it. Try as-is, then with .wav / .flac appended."""
    base = os.path.join(audio_root, audio_id)
    for cand in (base, base + '.wav', base + '.flac'):
        if os.path.isfile(cand):
            return cand
    raise FileNotFoundError(f'audio_id {audio_id!r}: none of {base}[.wav|.flac] exists (audio_root {audio_root})')


def check_audio_files(records, audio_root, reverb_root, script):
    """Before any work: every clip and IR the records name exists (SystemExit naming the first missing ones and
    how many, and the settings that say where they are)."""
    missing, seen = [], set()
    for r in records:
        for a, h in ((r['audio_id'], r['reverb_id']), (r.get('audio_id2'), r.get('reverb_id2'))):
            if a and (a, h) not in seen:
                seen.add((a, h))
                try:
                    resolve_audio(audio_root, a)
                except FileNotFoundError:
                    missing.append(os.path.join(audio_root, a))
                if h and not os.path.isfile(os.path.join(reverb_root, h)):
                    missing.append(os.path.join(reverb_root, h))
    if missing:
        raise SystemExit(f"{script}: {len(missing)} audio/IR file(s) named by the QA items do not exist, e.g. "
                         f"{missing[0]}; set --audio_root= (now {audio_root!r}) and --reverb_root= (now "
                         f"{reverb_root!r}) to where they are")


def qa_waveforms(records, audio_root, reverb_root, cache, device, sample_rate=sample_rate, clip_seconds=10.0):
    """QA records (official fields audio_id, reverb_id, audio_id2, reverb_id2) -> (B, 2, N) tensor on device."""
    items = []
    for r in records:
        pairs = [(r['audio_id'], r['reverb_id'])]
        if r.get('audio_id2'):
            pairs.append((r['audio_id2'], r['reverb_id2']))
        items.append([(cache.clip(resolve_audio(audio_root, a), sample_rate, clip_seconds),
                       cache.rir(os.path.join(reverb_root, h))) for a, h in pairs])
    return mix_items(items, device)


def qa_features(records, audio_root, reverb_root, cache, device, sample_rate=sample_rate, clip_seconds=10.0,
                feature_dir=''):
    """QA records -> (features (B, 4, T, 128) on device, [record targets or None]). With feature_dir, each item's
    features are kept as <feature_dir>/<key>.npy (float16) and read back later: for CPU runs that see items again."""
    targets = [r.get('targets') for r in records]
    if not feature_dir:
        return binaural_features(qa_waveforms(records, audio_root, reverb_root, cache, device, sample_rate,
                                              clip_seconds)), targets
    import hashlib
    import json
    keys = [hashlib.sha1(json.dumps([r['audio_id'], r['reverb_id'], r.get('audio_id2'), r.get('reverb_id2'),
                                     sample_rate, clip_seconds]).encode()).hexdigest()[:24] for r in records]
    paths = [os.path.join(feature_dir, k + '.npy') for k in keys]
    todo = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
    if todo:
        feats = binaural_features(qa_waveforms([records[i] for i in todo], audio_root, reverb_root, cache, device,
                                               sample_rate, clip_seconds)).cpu().numpy().astype(np.float16)
        for i, f in zip(todo, feats):
            common.atomic_write(paths[i], lambda fh, f=f: np.save(fh, f), mode='wb')
    return torch.from_numpy(np.stack([np.load(p) for p in paths]).astype(np.float32)).to(device), targets


def mix_items(items, device):
    """items: per example a list of 1 or 2 (dry (N,), rir (2, L)) numpy pairs -> (B, 2, N) tensor on device.
    Use it for clip/IR pairs of the encoder as well as for QA records."""
    B, S = len(items), max(len(it) for it in items)
    N = len(items[0][0][0])
    L = max(h.shape[1] for it in items for _, h in it)
    dry = np.zeros((B, S, N), np.float32)
    rirs = np.zeros((B, S, 2, L), np.float32)
    for b, it in enumerate(items):
        for s, (x, h) in enumerate(it):
            dry[b, s] = x
            rirs[b, s, :, :h.shape[1]] = h
    n = torch.tensor([len(it) for it in items], device=device)
    return convolve_mix(torch.from_numpy(dry).to(device), torch.from_numpy(rirs).to(device), n)

# -----------------------------------------------------------------------------
# record files

def read_sources(path):
    """A sources JSONL (docs/conventions.md) -> [{'path': absolute, 'labels': [...], 'split': ...}, ...]."""
    folder = os.path.dirname(os.path.abspath(path))
    out = []
    for i, r in enumerate(common.read_records(path), 1):
        common.require(r, ('path', 'labels', 'split'), f'{path}:{i}')
        labels = r['labels'] if isinstance(r['labels'], list) else [s for s in r['labels'].split(';') if s]
        if not labels or r['split'] not in ('train', 'eval'):
            raise ValueError(f"{path}:{i}: expected non-empty 'labels' and split 'train'|'eval', got {r}")
        out.append({**r, 'path': os.path.normpath(os.path.join(folder, r['path'])), 'labels': labels})
    return out


def read_rirs(render_dir, split):
    """IR records of `<render_dir>/<split>_reverberation.jsonl` (or the official .json), each with its absolute
    'path' (under <render_dir>/binaural) and 'targets' (common.targets_of) added."""
    path = os.path.join(render_dir, f'{split}_reverberation.jsonl')
    if not os.path.isfile(path) and os.path.isfile(path[:-1]):
        path = path[:-1]  # the official name: <split>_reverberation.json
    out = []
    for i, r in enumerate(common.read_records(path), 1):
        common.require(r, ('fname', 'sensor_position', 'source_position'), f'{path}:{i}')
        out.append({**r, 'path': os.path.join(os.path.abspath(render_dir), 'binaural', r['fname']),
                    'targets': common.targets_of(r['sensor_position'], r['source_position'])})
    return out
