"""
Dry sound sources: turn a collection of labelled clips into a sources list (docs/conventions.md):
`<out_dir>/sources.jsonl`, one clip a line {"path", "labels": [AudioSet display names], "split": "train"|"eval"},
plus `<out_dir>/summary.md`. Every clip is loaded once (features.load_clip) so that unreadable, empty, silent or
non-finite files are skipped with a warning and counted, never trained on.

Collections (--collection=):
- synth     the embedded default: a synthesised bank of 25 AudioSet classes, written as 32 kHz FLAC (no download)
- audioset  AudioSet metadata JSON(s), comma-separated; a file whose name contains 'eval' is the eval split. Either
            Spatial-AST's form, a plain list of {"folder", "id", "label": [mids]} (clip = <audio_root>/<folder>/<id>.wav,
            mids named through --class_list's CSV), or the AST/AudioMAE form {"data": [{"wav", "labels": "/m/..,/m/.."}]}
            (names from class_labels_indices.csv beside it, or --class_csv=). --weight_csv= (Spatial-AST's
            metadata/weights/*_weight.csv, one weight a line in the first JSON's order) gives each clip its sampling
            weight (train_encoder.py sampler='weighted').
- esc50     the ESC-50 root (meta/esc50.csv + audio/); categories mapped to AudioSet names; fold 5 is eval
- folder    a folder per class (folder name = display name, '_' read as ' ')
- manifest  a CSV with columns path,labels (labels ';'-separated), paths relative to the CSV
Clips without a fixed split are split by a hash of their path (reproducible, independent of order).

Run (CPU only; no GPU involved):
    python sources.py config/demo_sources.py                                  # demo bank -> out/demo/sources
    python sources.py --collection=synth --out_dir=out/sources --clips_train=200 --clips_eval=40
    python sources.py --collection=manifest --path=my_clips/manifest.csv --out_dir=out/clips
    python sources.py --collection=audioset --path=/data/AudioSet/metadata/balanced.json,/data/AudioSet/metadata/eval.json \
        --audio_root=/data/AudioSet --class_list=/data/AudioSet/metadata/class_labels_indices_subset.csv --out_dir=out/audioset
With a class list, its order (row order of the CSV = class index, as the official head) is written to
<out_dir>/classes.txt, which train_encoder.py takes as the order of its class head.
"""
import csv
import os
import time
import warnings
import zlib

import numpy as np

import common

# -----------------------------------------------------------------------------
# the synthesised bank: one generator per AudioSet class, each varied in pitch, timing, envelope and timbre

def _t(n, sr):
    return np.arange(n) / sr


def _loguni(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _band_noise(rng, n, sr, lo, hi, tilt=0.0):
    """Gaussian noise kept between lo and hi Hz (FFT mask), spectrum ~ f^tilt (tilt -0.5 = pink)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec *= ((f >= lo) & (f <= hi)) * np.maximum(f, 1.0) ** tilt
    return np.fft.irfft(spec, n)


def _harmonic(f, t, n_harm, rolloff, phase=None):
    """Periodic tone of fundamental f (scalar or per-sample array) with n_harm harmonics falling as k^-rolloff."""
    ph = 2 * np.pi * (np.cumsum(np.broadcast_to(f, t.shape)) * (t[1] - t[0]) if np.ndim(f) else f * t)
    return sum(np.sin(k * ph) / k ** rolloff for k in range(1, n_harm + 1))


def _strikes(rng, n, sr, times, make):
    """Place decaying events made by make(rng, length) at the given times (s)."""
    out = np.zeros(n)
    for s in times:
        i = int(s * sr)
        if i < n:
            ev = make(rng, n - i)
            out[i:i + len(ev)] += ev[:n - i]
    return out


def _poisson_times(rng, seconds, rate):
    return np.sort(rng.uniform(0, seconds, rng.poisson(rate * seconds) + 1))


def _partials(rng, n, sr, f0, ratios, tau, noise=0.0):
    def make(rng, m):
        t = _t(min(m, int(sr * tau * 6)), sr)
        tone = sum(np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 6.3)) * np.exp(-t * r ** 0.5 / tau) / (1 + i)
                   for i, r in enumerate(ratios))
        return tone + noise * rng.standard_normal(len(t)) * np.exp(-t / 0.01)
    return make


def _click(sr, lo, hi, tau):
    def make(rng, m):
        k = min(m, int(sr * tau * 8))
        return _band_noise(rng, k, sr, lo, hi) * np.exp(-_t(k, sr) / tau) * rng.uniform(0.5, 1.0)
    return make


def _gate(t, period, duty, phase=0.0):
    return (((t / period + phase) % 1.0) < duty).astype(float)


def _smooth_gate(t, period, duty, sr, ramp=0.005):
    g = _gate(t, period, duty)
    k = max(1, int(ramp * sr))
    return np.convolve(g, np.ones(k) / k, mode='same')


def _modes(rng, m, sr, freqs, amps, taus):
    """A struck body: exponentially decaying sinusoids (freqs Hz, amps, decay times s) with random phases, cut where
    the slowest has died (6 tau) or at m samples; modes at or above Nyquist are left out."""
    t = _t(min(m, int(sr * max(taus) * 6)), sr)
    return sum(a * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) * np.exp(-t / tau)
               for f, a, tau in zip(freqs, amps, taus) if f < sr / 2)


def _onset(x, y):
    """x with the (shorter) transient y added at its start."""
    x = x.copy()
    x[:len(y)] += y[:len(x)]
    return x


def _slow(rng, n, sr, rate):
    """A slowly wandering positive envelope (median ~1): exp of three random sinusoids below `rate` Hz."""
    t = _t(n, sr)
    z = sum(np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * rate * t + rng.uniform(0, 6.3)) for _ in range(3))
    return np.exp(0.5 * z)


def _sine_wave(rng, n, sr):
    # a test tone stays one sinusoid; the range reaches the high tones of hearing and audio tests
    t = _t(n, sr)
    return np.sin(2 * np.pi * _loguni(rng, 100, 12000) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0, 1) * t))


def _white_noise(rng, n, sr):
    t = _t(n, sr)
    return rng.standard_normal(n) * (1 + rng.uniform(0, 0.8) * np.sin(2 * np.pi * rng.uniform(0.1, 2) * t))


def _pink_noise(rng, n, sr):
    return _band_noise(rng, n, sr, 20, sr / 2, tilt=-0.5) * rng.uniform(0.5, 1.0)


def _chirp_tone(rng, n, sr):
    t = _t(n, sr)
    period = rng.uniform(0.2, 1.0)
    f0, f1 = _loguni(rng, 200, 1500), _loguni(rng, 3000, 15000)  # electronic sweeps span most of the audio band
    if rng.random() < 0.5:
        f0, f1 = f1, f0
    frac = (t % period) / period
    f = f0 * (f1 / f0) ** frac  # exponential sweep, restarted every period
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * _smooth_gate(t, period, 0.9, sr)


def _beep(rng, n, sr):
    # most electronic beeps are square waves from a piezo or a speaker (odd harmonics falling as 1/k), some are pure
    t = _t(n, sr)
    f = _loguni(rng, 700, 3500)
    ks = range(1, int(15000 / f) + 1, 2) if rng.random() < 0.7 else [1]
    tone = sum(np.sin(2 * np.pi * k * f * t) / k for k in ks)
    return tone * _smooth_gate(t, rng.uniform(0.15, 0.8), rng.uniform(0.15, 0.5), sr, 0.002)


def _siren(rng, n, sr):
    t = _t(n, sr)
    lo, span = _loguni(rng, 500, 900), rng.uniform(1.4, 2.2)
    if rng.random() < 0.5:  # wail: smooth up and down
        f = lo * span ** (0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(0.8, 3.0)))
    else:  # hi-lo two-tone
        f = np.where(_gate(t, rng.uniform(0.6, 1.4), 0.5) > 0, lo * span, lo)
    return _harmonic(f, t, 6, 1.2)


def _buzz(rng, n, sr):
    t = _t(n, sr)
    f = _loguni(rng, 80, 400) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(3, 8) * t))
    return _harmonic(f, t, 40, 0.8) * (0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 4) * t))


def _hum(rng, n, sr):
    # mains hum and its harmonics (transformer buzz reaches a few kHz); a low sound by nature
    t = _t(n, sr)
    mains = 50.0 if rng.random() < 0.5 else 60.0
    return _harmonic(mains * rng.uniform(0.99, 1.01), t, rng.integers(8, 40), rng.uniform(1.3, 2.0)) \
        + 0.02 * _band_noise(rng, n, sr, 20, 400)


def _clicking(rng, n, sr):
    times = _poisson_times(rng, n / sr, rng.uniform(2, 12))
    return _strikes(rng, n, sr, times, _click(sr, _loguni(rng, 800, 3000), 14000, rng.uniform(0.0005, 0.003)))


def _tick_tock(rng, n, sr):
    period = rng.uniform(0.4, 1.0)
    lo, hi = _loguni(rng, 800, 2000), _loguni(rng, 2500, 6000)
    ticks = _strikes(rng, n, sr, np.arange(rng.uniform(0, 0.2), n / sr, period), _click(sr, hi, 14000, 0.002))
    tocks = _strikes(rng, n, sr, np.arange(period / 2, n / sr, period), _click(sr, lo, 8000, 0.003))
    return ticks + tocks


def _whistle(rng, n, sr):
    # a referee's pea whistle (2-4.5 kHz, strong harmonics, the pea's 20-40 Hz trill) or a person's whistle (a
    # near-pure tone with vibrato); both carry breath noise up to ~12 kHz
    t = _t(n, sr)
    if rng.random() < 0.5:
        trill = np.sin(2 * np.pi * rng.uniform(20, 40) * t)
        f = _loguni(rng, 2000, 4500) * (1 + 0.02 * trill)
        ph = 2 * np.pi * np.cumsum(f) / sr
        tone = (np.sin(ph) + 0.35 * np.sin(2 * ph) + 0.15 * np.sin(3 * ph)) * (0.75 + 0.25 * trill)
        breath = 0.15 * _band_noise(rng, n, sr, 1000, 12000)
    else:
        f = _loguni(rng, 900, 3500) * (1 + rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
        ph = 2 * np.pi * np.cumsum(f) / sr
        tone = np.sin(ph) + 0.05 * np.sin(2 * ph)
        breath = 0.08 * _band_noise(rng, n, sr, 500, 12000)
    return (tone + breath / max(breath.std(), 1e-9) * 0.1) * _smooth_gate(t, rng.uniform(0.5, 2.0), 0.8, sr, 0.03)


def _bell(rng, n, sr):
    # a struck bell: hum, prime, tierce, quint, nominal and the upper partials (to ~10 f0), the higher dying faster,
    # and the clapper's metallic strike
    f0 = _loguni(rng, 300, 1500)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.5, 2.67, 3.0, 4.0, 5.33, 6.67, 8.0, 10.3])
    tau = rng.uniform(0.3, 1.2)

    def make(rng, m):
        ring = _modes(rng, m, sr, f0 * ratios * rng.uniform(0.99, 1.01, len(ratios)), ratios ** -0.5, tau / ratios ** 0.7)
        strike = _click(sr, 1000, 14000, rng.uniform(0.001, 0.003))(rng, len(ring))
        return _onset(ring, 0.5 * strike)
    return _strikes(rng, n, sr, np.arange(0, n / sr, rng.uniform(0.5, 1.5)), make)


def _chime(rng, n, sr):
    scale = _loguni(rng, 700, 1500) * 2 ** (np.array([0, 2, 4, 7, 9, 12]) / 12)
    out = np.zeros(n)
    for s in _poisson_times(rng, n / sr, rng.uniform(1.5, 5)):
        make = _partials(rng, n, sr, rng.choice(scale), [1.0, 2.76, 5.4, 8.93], rng.uniform(0.3, 0.9), 0.1)
        out += _strikes(rng, n, sr, [s], make) * rng.uniform(0.4, 1)
    return out


def _gong(rng, n, sr):
    # a gong or tam-tam: dozens of dense inharmonic modes from its low fundamental up to ~10 kHz (the shimmer), higher
    # ones dying faster, excited by a soft mallet (a low thud)
    f0 = _loguni(rng, 60, 200)
    freqs = np.sort(f0 * np.exp(rng.uniform(0, np.log(10000 / f0), 48)))
    tau = rng.uniform(1.0, 3.0)
    start = rng.uniform(0, 0.3)

    def make(rng, m):
        ring = _modes(rng, m, sr, freqs, (freqs / f0) ** -0.25, tau * (f0 / freqs) ** 0.4)
        thud = _click(sr, 40, 1500, 0.008)(rng, len(ring))
        return _onset(ring, 2.0 * thud)
    return _strikes(rng, n, sr, [start], make)


def _tuning_fork(rng, n, sr):
    # nearly a pure tone after the strike; the strike adds the clang modes (~6.25 f and ~17.5 f, gone in ~0.1 s) and a
    # click where it hit
    f = float(rng.choice([256.0, 288.0, 320.0, 384.0, 426.7, 440.0, 512.0])) * rng.uniform(0.995, 1.005)
    tau = rng.uniform(1.5, 4.0)

    def make(rng, m):
        tone = _modes(rng, m, sr, [f, 6.25 * f, 17.5 * f], [1.0, 0.5, 0.3], [tau, 0.08, 0.03])
        return _onset(tone, 0.5 * _click(sr, 500, 14000, 0.001)(rng, len(tone)))
    return _strikes(rng, n, sr, [rng.uniform(0, 0.2)], make)


def _telephone(rng, n, sr, tone):
    """A call-progress tone as heard from a handset: the earpiece's mild distortion (odd harmonics) and the line's
    hiss (300-3400 Hz). The tones are 350-620 Hz and the telephone band ends at 3.4 kHz: they stay narrow-band."""
    drive = rng.uniform(1.0, 3.0)
    x = np.tanh(drive * tone / max(np.abs(tone).max(), 1e-9)) / np.tanh(drive)
    return x + rng.uniform(0.005, 0.03) * _band_noise(rng, n, sr, 300, 3400) / 0.3


def _dial_tone(rng, n, sr):
    t = _t(n, sr)
    freqs = [[350.0, 440.0], [425.0], [400.0, 450.0], [450.0]][rng.integers(4)]
    return _telephone(rng, n, sr, sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in freqs))


def _busy_signal(rng, n, sr):
    t = _t(n, sr)
    freqs, period = [([480.0, 620.0], 1.0), ([425.0], 1.0), ([425.0], 0.4), ([400.0], 0.75)][rng.integers(4)]
    detune, start = rng.uniform(0.99, 1.01), rng.uniform(0, period)  # exchanges differ slightly; cadence phase random
    tone = sum(np.sin(2 * np.pi * f * detune * t + rng.uniform(0, 6.3)) for f in freqs)
    return _telephone(rng, n, sr, tone) * _smooth_gate(t + start, period * rng.uniform(0.9, 1.1), 0.5, sr)


def _ringtone(rng, n, sr):
    t = _t(n, sr)
    notes = _loguni(rng, 500, 1200) * 2 ** (rng.integers(0, 12, rng.integers(3, 7)) / 12)
    step = rng.uniform(0.08, 0.2)
    f = notes[(t / step).astype(int) % len(notes)]
    tune = np.where((t % (step * len(notes) * 2)) < step * len(notes), 1.0, 0.0)  # melody, then a pause
    return _harmonic(f, t, 5, 1.0) * tune * _smooth_gate(t, step, 0.85, sr)


def _heartbeat(rng, n, sr):
    bpm = rng.uniform(50, 130)
    thump = lambda f, tau: (lambda rng, m: np.sin(2 * np.pi * f * _t(min(m, int(sr * tau * 6)), sr))
                            * np.exp(-_t(min(m, int(sr * tau * 6)), sr) / tau))
    beats = np.arange(rng.uniform(0, 0.3), n / sr, 60 / bpm)
    lub = _strikes(rng, n, sr, beats, thump(rng.uniform(40, 70), 0.03))
    dub = _strikes(rng, n, sr, beats + rng.uniform(0.25, 0.35), thump(rng.uniform(60, 110), 0.02))
    return lub + 0.7 * dub + 0.05 * _band_noise(rng, n, sr, 20, 2000) * (np.abs(lub + dub) > 0.05)


def _knock(rng, n, sr):
    # knuckles on a door: the wood's low resonance and the hard contact's broadband click
    lo = _loguni(rng, 150, 500)
    times = []
    for g in np.arange(rng.uniform(0, 0.3), n / sr, rng.uniform(0.8, 1.6)):
        times += list(g + np.arange(rng.integers(2, 5)) * rng.uniform(0.12, 0.25))
    body, contact = _click(sr, lo, lo * 8, rng.uniform(0.008, 0.02)), _click(sr, 1000, 14000, rng.uniform(0.0002, 0.0006))

    def make(rng, m):
        x = body(rng, m)
        return _onset(x, rng.uniform(0.3, 1.0) * contact(rng, len(x)))
    return _strikes(rng, n, sr, times, make)


def _rumble(rng, n, sr):
    t = _t(n, sr)
    return _band_noise(rng, n, sr, 20, _loguni(rng, 80, 250)) * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 1) * t))


def _rain(rng, n, sr):
    drops = _strikes(rng, n, sr, _poisson_times(rng, n / sr, rng.uniform(30, 150)), _click(sr, 2000, 14000, 0.001))
    return drops + rng.uniform(0.05, 0.3) * _band_noise(rng, n, sr, 500, 12000)


def _static(rng, n, sr):
    t = _t(n, sr)
    hiss = _band_noise(rng, n, sr, 300, rng.uniform(6000, 14000))
    gate = np.repeat(rng.random(n // 320 + 1) < rng.uniform(0.5, 0.95), 320)[:n]  # dropouts every 10 ms
    pops = _strikes(rng, n, sr, _poisson_times(rng, n / sr, 20), _click(sr, 100, 14000, 0.0005))
    return hiss * gate * (0.8 + 0.2 * np.sin(2 * np.pi * 50 * t)) + 2 * pops


def _wind(rng, n, sr):
    # gusts of broadband noise (most of it low, as a microphone in wind hears it), a howl whose pitch follows the gust,
    # and leaves or grass rustling in the stronger gusts
    gust = _slow(rng, n, sr, rng.uniform(0.3, 1.5))
    body = _band_noise(rng, n, sr, 20, 15000, tilt=-rng.uniform(0.6, 1.0))
    howl_f = _loguni(rng, 300, 1500) * gust ** 0.3
    howl = np.sin(2 * np.pi * np.cumsum(howl_f) / sr) * _slow(rng, n, sr, 15)
    rustle = _band_noise(rng, n, sr, 2000, 14000)
    norm = lambda x: x / max(x.std(), 1e-9)
    return gust * norm(body) + rng.uniform(0, 0.4) * gust * norm(howl) + rng.uniform(0.05, 0.3) * gust ** 2 * norm(rustle)


def _crackle(rng, n, sr):
    times = _poisson_times(rng, n / sr, rng.uniform(8, 40))
    return _strikes(rng, n, sr, times, _click(sr, _loguni(rng, 300, 1500), 14000, rng.uniform(0.0005, 0.004))) \
        + 0.02 * _band_noise(rng, n, sr, 50, 2000)


# display name (checked against the AudioSet ontology) -> generator(rng, n_samples, sample_rate)
SYNTH_CLASSES = {
    'Sine wave': _sine_wave, 'White noise': _white_noise, 'Pink noise': _pink_noise, 'Chirp tone': _chirp_tone,
    'Beep, bleep': _beep, 'Siren': _siren, 'Buzz': _buzz, 'Hum': _hum, 'Clicking': _clicking,
    'Tick-tock': _tick_tock, 'Whistle': _whistle, 'Bell': _bell, 'Chime': _chime, 'Gong': _gong,
    'Tuning fork': _tuning_fork, 'Dial tone': _dial_tone, 'Busy signal': _busy_signal, 'Ringtone': _ringtone,
    'Heart sounds, heartbeat': _heartbeat, 'Knock': _knock, 'Rumble': _rumble, 'Rain': _rain, 'Static': _static,
    'Wind': _wind, 'Crackle': _crackle,
}


def synth_clip(name, seed, index, clip_seconds, sample_rate=32000):
    """One clip of class `name`, deterministic in (seed, class, index); float32, peak 0.9."""
    rng = np.random.default_rng([seed, list(SYNTH_CLASSES).index(name), index])
    x = SYNTH_CLASSES[name](rng, int(round(clip_seconds * sample_rate)), sample_rate)
    return (0.9 * x / max(np.abs(x).max(), 1e-9)).astype(np.float32)


def make_synth_bank(out_dir, clips_train, clips_eval, clip_seconds, seed, sample_rate=32000, classes=None):
    """Write <out_dir>/<class>/<i>.flac; the first clips_train of each class are train, the rest eval."""
    import soundfile as sf
    rows, names = [], list(classes or SYNTH_CLASSES)
    prog = common.Progress(len(names) * (clips_train + clips_eval), 'synth bank', unit='clips')
    for name in names:
        folder = os.path.join(out_dir, name.replace(', ', '_').replace(' ', '_'))
        os.makedirs(folder, exist_ok=True)
        for i in range(clips_train + clips_eval):
            path = os.path.join(folder, f'{i:04d}.flac')
            sf.write(path, synth_clip(name, seed, i, clip_seconds, sample_rate), sample_rate, subtype='PCM_16')
            rows.append({'path': path, 'labels': [name], 'split': 'train' if i < clips_train else 'eval'})
            prog.update()
    return rows

# -----------------------------------------------------------------------------
# readers of real collections: each returns [{'path': absolute, 'labels': [...], 'split': 'train'|'eval'|None}]

ESC50_TO_AUDIOSET = {
    'dog': 'Dog', 'rooster': 'Chicken, rooster', 'pig': 'Pig', 'cow': 'Cattle, bovinae', 'frog': 'Frog', 'cat': 'Cat',
    'hen': 'Chicken, rooster', 'insects': 'Insect', 'sheep': 'Sheep', 'crow': 'Crow', 'rain': 'Rain',
    'sea_waves': 'Waves, surf', 'crackling_fire': 'Crackle', 'crickets': 'Cricket', 'chirping_birds': 'Chirp, tweet',
    'water_drops': 'Drip', 'wind': 'Wind', 'pouring_water': 'Pour', 'toilet_flush': 'Toilet flush',
    'thunderstorm': 'Thunderstorm', 'crying_baby': 'Baby cry, infant cry', 'sneezing': 'Sneeze', 'clapping': 'Clapping',
    'breathing': 'Breathing', 'coughing': 'Cough', 'footsteps': 'Walk, footsteps', 'laughing': 'Laughter',
    'brushing_teeth': 'Toothbrush', 'snoring': 'Snoring', 'drinking_sipping': 'Liquid', 'door_wood_knock': 'Knock',
    'mouse_click': 'Clicking', 'keyboard_typing': 'Computer keyboard', 'door_wood_creaks': 'Creak',
    'can_opening': 'Mechanisms', 'washing_machine': 'Mechanisms', 'vacuum_cleaner': 'Vacuum cleaner',
    'clock_alarm': 'Alarm clock', 'clock_tick': 'Tick-tock', 'glass_breaking': 'Shatter', 'helicopter': 'Helicopter',
    'chainsaw': 'Chainsaw', 'siren': 'Siren', 'car_horn': 'Vehicle horn, car horn, honking', 'engine': 'Engine',
    'train': 'Train', 'church_bells': 'Church bell', 'airplane': 'Aircraft', 'fireworks': 'Fireworks',
    'hand_saw': 'Sawing',
}


def _csv_rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def read_audioset(paths, class_csv='', audio_root='', class_list='', weight_csv=''):
    """AudioSet metadata JSON(s) in either form (see the top of the file); labels are machine ids named through a class
    CSV. Returns rows; with weight_csv each row of the first JSON carries its 'weight'."""
    rows = []
    for n, path in enumerate(paths):
        records = common.read_records(path)
        split = 'eval' if 'eval' in os.path.basename(path) else 'train'
        if records and all(isinstance(r, dict) and {'folder', 'id', 'label'} <= set(r) for r in records[:10]):
            got = read_audioset_list(path, records, audio_root, class_list or class_csv, split)
        else:
            got = read_audioset_ast(path, records, class_csv, split)
        if n == 0 and weight_csv:
            weights = np.loadtxt(weight_csv, delimiter=',', ndmin=1)
            if len(weights) != len(got):
                raise ValueError(f'{weight_csv}: {len(weights)} weights, but {path} has {len(got)} clips '
                                 f'(expected one weight a line, in the JSON\'s order)')
            got = [{**r, 'weight': float(w)} for r, w in zip(got, weights)]
        rows += got
    return rows


def mid_names(csv_path, where):
    if not csv_path or not os.path.isfile(csv_path):
        raise FileNotFoundError(f'{where}: labels are AudioSet machine ids: give --class_list= (or --class_csv=), a '
                                f'CSV with mid and display_name columns such as class_labels_indices_subset.csv')
    return {r['mid']: r['display_name'] for r in _csv_rows(csv_path)}


def read_audioset_list(path, records, audio_root, csv_path, split):
    """Spatial-AST's list form: clip = <audio_root>/<folder>/<id>.wav ('' = the folder above the metadata folder);
    machine ids outside the CSV are left out (the clip's other labels stay)."""
    names = mid_names(csv_path, path)
    root = audio_root or os.path.dirname(os.path.dirname(os.path.abspath(path)))
    rows = []
    for i, r in enumerate(records, 1):
        if not isinstance(r.get('label'), list):
            raise ValueError(f"{path}: record {i}: 'label' must be a list of machine ids, got {r.get('label')!r}")
        rows.append({'path': os.path.join(root, r['folder'], r['id'] + '.wav'),
                     'labels': [names[m] for m in r['label'] if m in names], 'split': split})
    return rows


def read_audioset_ast(path, records, class_csv, split):
    """The AST/AudioMAE form {"data": [{"wav", "labels": "/m/..,/m/.."}]}; wav paths relative to the JSON's folder."""
    csv_path = class_csv or os.path.join(os.path.dirname(path), 'class_labels_indices.csv')
    names = mid_names(csv_path, path)
    rows = []
    for i, r in enumerate(records, 1):
        common.require(r, ('wav', 'labels'), f'{path}:{i}')
        mids = [m for m in r['labels'].split(',') if m]
        unknown = [m for m in mids if m not in names]
        if unknown:
            raise KeyError(f'{path}:{i}: label id(s) {unknown} not in {csv_path}')
        rows.append({'path': os.path.join(os.path.dirname(os.path.abspath(path)), r['wav']),
                     'labels': [names[m] for m in mids], 'split': split})
    return rows


def read_esc50(root):
    rows = []
    for i, r in enumerate(_csv_rows(os.path.join(root, 'meta', 'esc50.csv')), 2):
        common.require(r, ('filename', 'fold', 'category'), f'{root}/meta/esc50.csv:{i}')
        rows.append({'path': os.path.abspath(os.path.join(root, 'audio', r['filename'])),
                     'labels': [ESC50_TO_AUDIOSET.get(r['category'], r['category'])],
                     'split': 'eval' if r['fold'] == '5' else 'train'})
    return rows


def read_folder(root):
    exts = ('.wav', '.flac', '.ogg', '.mp3', '.aiff', '.aif')
    rows = []
    for cls in sorted(os.listdir(root)):
        folder = os.path.join(root, cls)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.lower().endswith(exts):
                    rows.append({'path': os.path.abspath(os.path.join(folder, name)),
                                 'labels': [cls.replace('_', ' ')], 'split': None})
    return rows


def read_manifest(path):
    folder = os.path.dirname(os.path.abspath(path))
    rows = []
    for i, r in enumerate(_csv_rows(path), 2):
        common.require(r, ('path', 'labels'), f'{path}:{i}')
        rows.append({'path': os.path.join(folder, r['path']), 'labels': [s.strip() for s in r['labels'].split(';') if s.strip()],
                     'split': r.get('split') or None})
    return rows


def read_class_list(path):
    """One display name a line, or a CSV with a display_name column (e.g. class_labels_indices_subset.csv)."""
    with open(path) as f:
        head = f.readline()
    if 'display_name' in head:
        return [r['display_name'] for r in _csv_rows(path)]
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def hash_split(path, eval_fraction, seed):
    """'eval' for a stable pseudo-random fraction of clips, keyed on the file name (not on list order)."""
    h = zlib.crc32(f'{seed}:{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}'.encode())
    return 'eval' if (h % 10000) < eval_fraction * 10000 else 'train'


def check_clips(rows, clip_seconds):
    """Load every clip once; returns (good rows, [(path, reason)] of skipped bad clips)."""
    from features import BadClip, load_clip
    good, bad = [], []
    prog = common.Progress(len(rows), 'checking clips', unit='clips')
    for r in rows:
        try:
            load_clip(r['path'], 32000, clip_seconds)
            good.append(r)
        except BadClip as e:
            warnings.warn(f'skipping bad clip: {e}')
            bad.append((r['path'], str(e)))
        prog.update()
    return good, bad


def write_sources(out_dir, rows, bad, dropped, seconds, collection, classes=None):
    """sources.jsonl (paths relative to out_dir when inside it) + summary.md [+ classes.txt: the class order]."""
    out_dir = os.path.abspath(out_dir)
    def rel(p):
        r = os.path.relpath(p, out_dir)
        return p if r.startswith('..') else r
    common.write_jsonl(os.path.join(out_dir, 'sources.jsonl'),
                       [{'path': rel(r['path']), 'labels': r['labels'], 'split': r['split'],
                         **({'weight': r['weight']} if 'weight' in r else {})} for r in rows])
    counts = {}
    for r in rows:
        for lab in r['labels']:
            counts.setdefault(lab, {'train': 0, 'eval': 0})[r['split']] += 1
    lines = [f'# sources ({collection})', '',
             f"{len(rows)} clips ({sum(r['split'] == 'train' for r in rows)} train, "
             f"{sum(r['split'] == 'eval' for r in rows)} eval), {len(counts)} labels, "
             f'{len(bad)} bad clips skipped, {dropped} clips without a kept label dropped, {seconds:.1f} s', '',
             '| label | train | eval |', '|---|---|---|']
    lines += [f"| {k} | {v['train']} | {v['eval']} |" for k, v in sorted(counts.items())]
    if classes:
        common.write_text(os.path.join(out_dir, 'classes.txt'), ''.join(c + '\n' for c in classes))
        lines += ['', f'## class order ({len(classes)} classes, classes.txt: line k = class index k of the head)', '']
        lines += [f'{k}. {c}' for k, c in enumerate(classes)]
    if any('weight' in r for r in rows):
        lines += ['', f"sampling weights: {sum('weight' in r for r in rows)} clips carry one (sampler='weighted')"]
    if bad:
        lines += ['', '## skipped bad clips', ''] + [f'- `{p}`: {why}' for p, why in bad]
    common.write_text(os.path.join(out_dir, 'summary.md'), '\n'.join(lines) + '\n')

# -----------------------------------------------------------------------------
# config
collection = 'synth'   # synth | audioset | esc50 | folder | manifest
path = ''              # collection location: metadata JSON(s) (comma-separated) | ESC-50 root | folder | manifest CSV
out_dir = 'out/sources'  # writes <out_dir>/sources.jsonl, summary.md (and the synth clips)
class_csv = ''         # audioset AST form: class_labels_indices.csv ('' = beside the JSON)
class_list = ''        # a class CSV (class_labels_indices_subset.csv) or one name a line: keeps only these labels, and
                       # its order becomes the class index (classes.txt); '' = keep all
audio_root = ''        # audioset list form: the AudioSet folder <folder>/<id>.wav is under ('' = above the metadata)
weight_csv = ''        # audioset: sampling weights of the first --path JSON's clips (metadata/weights/*_weight.csv)
eval_fraction = 0.2    # clips without a fixed split: fraction sent to eval (by path hash)
clips_train = 10       # synth: train clips per class
clips_eval = 4         # synth: eval clips per class
clip_seconds = 10.0    # synth clip length (s); also the length clips are checked at
check = True           # load every clip once and skip bad ones (False trusts the collection)
seed = 1337            # synth bank and hash split
device = 'cpu'         # unused (no tensors here); accepted like every stage
# -----------------------------------------------------------------------------

if __name__ == '__main__':
    exec(open('configurator.py').read())
    assert collection in ('synth', 'audioset', 'esc50', 'folder', 'manifest'), f'unknown collection {collection!r}'
    assert collection == 'synth' or path, f'--path= is required for collection {collection!r}'
    assert 0.0 <= eval_fraction <= 1.0
    t0 = time.time()
    if collection == 'synth':
        rows = make_synth_bank(out_dir, clips_train, clips_eval, clip_seconds, seed)
    else:
        reader = {'audioset': lambda p: read_audioset(p.split(','), class_csv, audio_root, class_list, weight_csv),
                  'esc50': read_esc50,
                  'folder': read_folder, 'manifest': read_manifest}[collection]
        rows = reader(path)
    for r in rows:
        r['split'] = r['split'] or hash_split(r['path'], eval_fraction, seed)
    dropped, order = 0, read_class_list(class_list) if class_list else None
    if class_list:
        keep = set(order)
        rows = [{**r, 'labels': [lab for lab in r['labels'] if lab in keep]} for r in rows]
        dropped = sum(not r['labels'] for r in rows)
        rows = [r for r in rows if r['labels']]
    rows, bad = check_clips(rows, clip_seconds) if check and collection != 'synth' else (rows, [])
    write_sources(out_dir, rows, bad, dropped, time.time() - t0, collection, order)
    print(f'wrote {len(rows)} clips to {out_dir}/sources.jsonl ({len(bad)} bad skipped, {dropped} dropped) '
          f'in {time.time() - t0:.1f} s')
