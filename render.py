"""
Binaural room impulse responses (IRs) for shoebox rooms: the data BAT's sources are placed with.

The paper rendered IRs with SoundSpaces 2.0 in Matterport3D houses (not installable here, scenes gated, and the
released IRs are not reproducible: official issue #8). This is our embedded, seeded renderer:
- image-source method (ISM) for the early part: every image source is heard through the measured MIT KEMAR HRTF
  for its direction of arrival in the listener's frame, with 1/r spreading, sqrt(1 - absorption) per wall
  reflection and a windowed-sinc fractional delay at c = 343 m/s;
- a diffuse late tail after the image sources (binaural noise made of HRTF-filtered noise from random directions),
  starting at the energy of the last rendered reflections and decaying at the room's Eyring RT60;
- optional air absorption (ISO 9613-1, 20 C, 50 % RH) applied as a time-frequency gain: a sample at time t has
  travelled c * t metres.
Everything is batched in torch over image sources and over IRs (GPU with --device=cuda).
Output layout = the official `mp3d_reverb` one (docs/conventions.md): <out_dir>/binaural/<room_id>/<k>.npy (2, L)
float32 at 32 kHz, channel 0 = left ear, and <out_dir>/{train,eval}_reverberation.jsonl, plus summary.md.

Run (CPU):      python render.py config/demo_render.py --device=cpu
Run (one GPU):  python render.py --out_dir=out/rirs --device=cuda
(no torchrun: rendering is one process; a GPU renders hundreds of IRs per batch.)
Library:        from render import binaural_rir; ir = binaural_rir([5, 3, 4], 0.3, [2, 1.6, 2], [1, 1.2, 1])

Axes are Habitat's (+X right, +Y up, -Z front); the listener faces -Z. Rooms span [0,Lx] x [0,Ly] x [0,Lz].
"""
import bz2
import importlib.util
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from common import atomic_write

SAMPLE_RATE = 32000  # Hz, the project's audio rate (docs/conventions.md)
SPEED_OF_SOUND = 343.0  # m/s
MAX_DISTANCE = 10.0  # m, the largest distance class (20 = 10 m)
MIN_DISTANCE = 0.1  # m, closer than this the far-field HRTF (measured at 1.4 m) means nothing
SINC_TAPS = 32  # windowed-sinc fractional-delay length (Hann): flat within 0.1 dB to 14 kHz, -1.8 dB at 15 kHz
SINC_PHASES = 32  # fractional delays quantised to 1/32 sample (error <= 0.5 us, far below the ~10 us ITD threshold)
HRIR_TAPS = 96  # 3 ms of HRIR kept from just before the earliest onset (energy kept: median 99.3 %, min 90 %)
DEFAULT_HRTF_CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'nanobat', 'mit_kemar_normal_pinna_32k.npz')
SLAB_HINT = 'pip install --no-deps slab==1.8.2'

# -----------------------------------------------------------------------------
# reading slab's KEMAR pickle without importing slab (its __init__ needs PortAudio)

class _SlabContainer:
    """Stand-in for slab.hrtf.HRTF / slab.filter.Filter: the pickle only sets attributes on them."""


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED_GLOBALS = {('slab.hrtf', 'HRTF'): _SlabContainer, ('slab.filter', 'Filter'): _SlabContainer,
                    ('numpy.core.multiarray', '_reconstruct'): _numpy_reconstruct(),
                    ('numpy._core.multiarray', '_reconstruct'): _numpy_reconstruct(),
                    ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits slab's two containers and numpy's array reconstruction; any other global is refused."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only slab.hrtf.HRTF, "
                                     f"slab.filter.Filter and numpy array reconstruction are allowed")


def slab_kemar_path():
    """Path of slab's bundled KEMAR file, found without running slab's __init__."""
    spec = importlib.util.find_spec('slab')  # locating a top-level package does not execute it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the MIT KEMAR HRTF comes from the slab wheel, which is not installed: {SLAB_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / 'data' / 'mit_kemar_normal_pinna.bz2'
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found inside the slab package; reinstall it: {SLAB_HINT}")
    return path


def read_slab_kemar(path):
    """-> hrir (710, 2, 512) float64 at 44.1 kHz (channel 0 = left), azimuth, elevation (deg; az 0 front, 90 left)."""
    try:
        with bz2.open(path, 'rb') as f:
            obj = _RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{path}: {e}") from None
    except Exception as e:
        raise ValueError(f"unreadable HRTF {str(path)!r} ({type(e).__name__}: {e}); expected slab's bz2 pickle "
                         f"of the MIT KEMAR HRTF; reinstall it: {SLAB_HINT}") from None
    hrir = np.stack([np.asarray(flt.data, dtype=np.float64).T for flt in obj.data])  # (D, 2, taps)
    sources = np.asarray(obj.sources, dtype=np.float64)  # (D, 3) vertical-polar: azimuth, elevation, radius
    assert hrir.shape[1] == 2 and sources.shape == (len(hrir), 3), (hrir.shape, sources.shape)
    return hrir, sources[:, 0], sources[:, 1], float(obj.samplerate)


def build_kemar_cache(cache_path):
    """Convert slab's pickle once to an .npz resampled to 32 kHz (polyphase, scipy; a one-time step)."""
    from scipy.signal import resample_poly
    hrir, az, el, fs = read_slab_kemar(slab_kemar_path())
    g = math.gcd(SAMPLE_RATE, int(fs))
    hrir32 = resample_poly(hrir, SAMPLE_RATE // g, int(fs) // g, axis=-1).astype(np.float32)  # (D, 2, 372)
    atomic_write(cache_path, lambda f: np.savez(f, hrir=hrir32, azimuth=az, elevation=el,
                                                sample_rate=np.int64(SAMPLE_RATE)), mode='wb')


def load_hrtf(head='kemar', hrtf_cache=DEFAULT_HRTF_CACHE):
    """-> (hrir (D, 2, N) float32 at 32 kHz, azimuth (D,), elevation (D,)) in degrees, az 0 front / 90 left."""
    if head == 'none':  # omnidirectional point at the head centre: a unit impulse, both channels equal
        return np.ones((1, 2, 1), np.float32), np.zeros(1), np.zeros(1)
    if head == 'kemar':
        path = hrtf_cache
        if not os.path.isfile(path):
            build_kemar_cache(path)
    elif str(head).endswith('.sofa'):
        raise ValueError(f"head={head!r}: SOFA files need h5py/netCDF, which this project does not install; "
                         f"convert it to an .npz with keys hrir (D, 2, N) at 32 kHz, azimuth, elevation")
    else:
        path = head
    try:
        with np.load(path) as z:
            hrir, az, el, fs = z['hrir'], z['azimuth'], z['elevation'], int(z['sample_rate'])
    except Exception as e:
        raise ValueError(f"unreadable HRTF {path!r} ({type(e).__name__}: {e}); expected head='kemar', 'none' "
                         f"or an .npz with hrir (D, 2, N), azimuth, elevation, sample_rate={SAMPLE_RATE} "
                         f"(a broken KEMAR cache is rebuilt once deleted)") from None
    if hrir.ndim != 3 or hrir.shape[1] != 2 or fs != SAMPLE_RATE or len(az) != len(hrir):
        raise ValueError(f"HRTF {path!r}: hrir shape {hrir.shape} / sample_rate {fs}; expected (D, 2, N) at "
                         f"{SAMPLE_RATE} Hz with D azimuths and elevations")
    return hrir.astype(np.float32), az.astype(np.float64), el.astype(np.float64)

# -----------------------------------------------------------------------------
# the HRTF as a table of fractionally delayed filters

def _onsets(hrir, frac=0.1):
    """First sample whose magnitude reaches frac of each filter's peak. (..., N) -> (...) int."""
    a = np.abs(hrir)
    return np.argmax(a >= frac * a.max(-1, keepdims=True), axis=-1)


def sinc_kernels(taps=SINC_TAPS, phases=SINC_PHASES):
    """(phases, taps) Hann-windowed sincs; kernel p delays by (taps // 2 - 1) + p / phases samples."""
    c0 = taps // 2 - 1
    x = np.arange(taps)[None, :] - c0 - np.arange(phases)[:, None] / phases  # distance from the fractional centre
    w = 0.5 * (1 + np.cos(np.pi * np.clip(x / (taps / 2), -1, 1)))
    return (np.sinc(x) * w).astype(np.float32), c0


class HRTFTable:
    """Every measured direction's HRIR pre-convolved with every fractional-delay kernel, plus a 1-degree
    direction lookup. Nearest measured direction, not interpolation: KEMAR's grid is 5-10 degrees, and mixing
    neighbouring HRIRs whose onsets differ comb-filters them unless they are time-aligned first; nearest keeps
    each measured filter intact (direction error <= half a grid step) while distance and the fractional delay
    of every image stay exact. Interpolation would also multiply the per-image cost by 3."""

    def __init__(self, head='kemar', hrtf_cache=DEFAULT_HRTF_CACHE, device='cpu'):
        hrir, az, el = load_hrtf(head, hrtf_cache)
        self.head, self.device = head, device
        self.el_range = (float(el.min()), float(el.max())) if head != 'none' else (-90.0, 90.0)  # measured range
        # head-centre reference = onset of the frontal HRIR; keep a few samples before the earliest onset
        # (ipsilateral ears hear lateral sources before the head centre would) and HRIR_TAPS after it
        front = int(np.argmin(np.abs(((az + 180) % 360) - 180) + np.abs(el)))
        ref = int(round(_onsets(hrir[front]).mean())) if hrir.shape[-1] > 1 else 0
        start = max(0, int(_onsets(hrir).min()) - 6) if hrir.shape[-1] > 1 else 0
        trimmed = hrir[..., start:start + HRIR_TAPS]
        self.lead = ref - start  # table sample `lead` = the moment the wave passes the head centre
        self.onsets = _onsets(trimmed) - self.lead  # (D, 2) ear onset relative to the head centre, samples
        kern, self.c0 = sinc_kernels()
        x = torch.from_numpy(np.ascontiguousarray(trimmed)).reshape(-1, 1, trimmed.shape[-1])  # (D*2, 1, N)
        w = torch.from_numpy(kern[:, ::-1].copy())[:, None, :]  # conv1d correlates: flip for a true convolution
        tab = torch.nn.functional.conv1d(x, w, padding=kern.shape[1] - 1)  # (D*2, P, N + taps - 1)
        self.table = tab.reshape(len(hrir), 2, SINC_PHASES, -1).transpose(1, 2).contiguous().to(device)  # (D, P, 2, T)
        self.taps = self.table.shape[-1]
        self.rows = self.table.view(-1, 2 * self.taps)  # (D*P, 2*T): one row per (direction, phase), fast to gather
        self.lookup = self._lookup_grid(az, el).to(device)  # (181, 360) nearest direction index

    @staticmethod
    def _lookup_grid(az, el):
        """Nearest measured direction (great circle) for every integer (elevation + 90, azimuth)."""
        def unit(a, e):
            a, e = np.radians(a), np.radians(e)
            return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1)
        ge, ga = np.meshgrid(np.arange(-90, 91), np.arange(360), indexing='ij')
        sim = unit(ga.ravel(), ge.ravel()) @ unit(az, el).T  # (181*360, D)
        return torch.from_numpy(sim.argmax(1).reshape(181, 360))

    def index(self, d):
        """Offsets d (..., 3) in Habitat axes -> nearest HRIR index (...,). KEMAR azimuth: 0 front, 90 left."""
        az = torch.rad2deg(torch.atan2(-d[..., 0], -d[..., 2])).round().long() % 360
        el = torch.rad2deg(torch.atan2(d[..., 1], torch.hypot(d[..., 0], d[..., 2]))).round().long() + 90
        return self.lookup[el, az]


_TABLES = {}


def get_table(head='kemar', hrtf_cache=DEFAULT_HRTF_CACHE, device='cpu'):
    key = (head, hrtf_cache, str(device))
    if key not in _TABLES:
        _TABLES[key] = HRTFTable(head, hrtf_cache, device)
    return _TABLES[key]

# -----------------------------------------------------------------------------
# room acoustics

def eyring_rt60(room_dims, absorption):
    """Eyring reverberation time (s) of a shoebox with one broadband absorption coefficient."""
    lx, ly, lz = room_dims
    volume, surface = lx * ly * lz, 2 * (lx * ly + ly * lz + lx * lz)
    if absorption >= 1.0:
        return 0.0
    return 24 * math.log(10) * volume / (SPEED_OF_SOUND * surface * -math.log(1 - absorption))


def air_absorption_db_per_m(freqs, temperature=20.0, humidity=50.0):
    """ISO 9613-1 atmospheric absorption (dB/m) at 101.325 kPa."""
    t, t0, t01 = temperature + 273.15, 293.15, 273.16
    h = humidity * 10 ** (-6.8346 * (t01 / t) ** 1.261 + 4.6151)  # molar water vapour concentration, %
    fr_o = 24 + 4.04e4 * h * (0.02 + h) / (0.391 + h)
    fr_n = (t / t0) ** -0.5 * (9 + 280 * h * math.exp(-4.170 * ((t / t0) ** (-1 / 3) - 1)))
    f2 = freqs ** 2
    return 8.686 * f2 * (1.84e-11 * (t / t0) ** 0.5 + (t / t0) ** -2.5 * (
        0.01275 * math.exp(-2239.1 / t) / (fr_o + f2 / fr_o) + 0.1068 * math.exp(-3352.0 / t) / (fr_n + f2 / fr_n)))


def image_lattice(max_order):
    """All image sources with at most max_order reflections: (I, 3) lattice index u, (I, 3) sign, (I,) order.
    Along one axis the image is at 2*u*L + s (2|u| reflections) or 2*u*L - s (|2u - 1| reflections)."""
    u = np.arange(-max_order - 1, max_order + 2)  # wide enough for order max_order + 1
    axis = np.concatenate([np.stack([u, np.ones_like(u), np.abs(2 * u)], 1),
                           np.stack([u, -np.ones_like(u), np.abs(2 * u - 1)], 1)])  # (2(2N+3), 3)
    axis = axis[axis[:, 2] <= max_order + 1]
    ix, iy, iz = np.meshgrid(*[np.arange(len(axis))] * 3, indexing='ij')
    a = np.stack([axis[ix.ravel()], axis[iy.ravel()], axis[iz.ravel()]], 1)  # (M, 3 axes, 3)
    order = a[:, :, 2].sum(1)
    keep = order <= max_order + 1  # one order more than rendered: its earliest arrival ends the complete part
    a, order = a[keep], order[keep]
    sort = np.argsort(order, kind='stable')
    return a[sort, :, 0], a[sort, :, 1], order[sort]


_LATTICES = {}


def render_batch(room_dims, absorption, listener, source, table, max_order=6, ir_len=32000,
                 air_absorption=True, tail=True, seeds=None, bank_seed=0, fade_ms=5.0):
    """Batched renderer. room_dims, listener, source (B, 3); absorption (B,); seeds (B,) ints for the tail.
    Inputs are assumed valid (binaural_rir / the script validate). -> (B, 2, ir_len) float32 tensor."""
    dev = table.device
    f64 = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64), device=dev)
    dims, alpha, lis, src = f64(room_dims), f64(absorption), f64(listener), f64(source)
    B, fs, c = len(dims), SAMPLE_RATE, SPEED_OF_SOUND
    if max_order not in _LATTICES:
        _LATTICES[max_order] = image_lattice(max_order)
    u, sign, order = (torch.as_tensor(a, device=dev) for a in _LATTICES[max_order])
    pos = 2 * u * dims[:, None, :] + sign * src[:, None, :]  # (B, I, 3) image positions
    d = pos - lis[:, None, :]  # (B, I, 3) listener -> image
    r = d.norm(dim=-1)  # (B, I)
    # the ISM is complete up to the earliest order max_order+1 arrival; the diffuse tail takes over there
    t_mix = torch.where(order == max_order + 1, r, torch.inf).amin(1) / c  # (B,) s
    rendered = order <= max_order
    d, r, ordr = d[:, rendered], r[:, rendered], order[rendered]
    beta = torch.sqrt(1 - alpha)[:, None]  # pressure reflection coefficient
    gain = beta ** ordr / r  # 1/r spreading, unit gain at 1 m
    fade = fade_ms * 1e-3
    if tail:
        decay, e_mix = tail_energy(dims, alpha, t_mix, r / c, gain, ordr)
    ism_w = (0.5 - 0.5 * torch.sin(torch.pi * ((r / c - t_mix[:, None]) / fade).clamp(-0.5, 0.5)))
    gain = gain * (ism_w if tail else 1.0)
    delay = r / c * fs  # (B, I) samples from emission to the head centre
    front = table.lead + table.c0  # buffer samples before t = 0
    n = delay.floor().long()
    p = ((delay - n) * SINC_PHASES).round().long()
    n, p = n + p // SINC_PHASES, p % SINC_PHASES
    live = (n < ir_len + front) & (gain != 0)
    bi, ii = live.nonzero(as_tuple=True)  # drop images that arrive too late or are faded out
    vals = table.rows.index_select(0, table.index(d[bi, ii]) * SINC_PHASES + p[bi, ii])  # (K, 2*T)
    vals.mul_(gain[bi, ii, None].float())
    nk = n[bi, ii]
    buf_len = int(nk.max()) + table.taps if len(nk) else front  # only as long as the live images need
    it = torch.int32 if B * 2 * buf_len < 2 ** 31 else torch.int64  # int32: half the memory traffic
    idx = (bi.to(it) * 2)[:, None, None] + torch.arange(2, device=dev, dtype=it)[None, :, None]  # (K, 2, 1) row
    idx = idx * buf_len + nk.to(it)[:, None, None] + torch.arange(table.taps, device=dev, dtype=it)  # (K, 2, T)
    buf = torch.zeros(B * 2 * buf_len, device=dev)
    buf.index_add_(0, idx.reshape(-1), vals.view(-1))
    early = buf.view(B, 2, buf_len)[:, :, front:front + ir_len]  # (B, 2, <= L)
    if tail:
        ir = diffuse_tail(decay, e_mix, t_mix, table, ir_len, seeds, bank_seed, fade)
        ir[:, :, :early.shape[-1]] += early
    else:
        ir = torch.nn.functional.pad(early, (0, ir_len - early.shape[-1]))
    if air_absorption:
        ir = apply_air_absorption(ir)
    return ir


_BANKS = {}


def noise_bank(table, length, seed, members=16, directions=32):
    """(members, 2, length) stationary binaural diffuse noise: each member sums HRIR-filtered white noise from
    `directions` directions drawn uniformly on the sphere (circular convolution, so it stays stationary).
    Per-ear variance = the mean HRIR energy, as for image sources from random directions."""
    key = (id(table), length, seed)
    if key not in _BANKS:
        g = torch.Generator().manual_seed(int(seed))
        v = torch.randn(members, directions, 3, generator=g, dtype=torch.float64)
        h = table.table[table.index(v.to(table.device)), 0]  # (M, K, 2, T) nearest HRIRs of uniform directions
        noise = torch.randn(members, directions, 1, length, generator=g).to(table.device)
        spec = (torch.fft.rfft(noise, n=length) * torch.fft.rfft(h, n=length)).sum(1)  # (M, 2, F)
        bank = torch.fft.irfft(spec, n=length) / math.sqrt(directions)  # (M, 2, length)
        _BANKS[key] = torch.cat([bank, bank], -1)  # doubled, so any circular shift is a plain slice
    return _BANKS[key]


def tail_energy(dims, alpha, t_mix, t_img, gain, order):
    """-> energy decay rate (B,) 1/s (Eyring: exp(-decay t) = -60 dB at RT60) and the tail's energy per sample at
    t_mix (B,): the reflections' energy in [t_mix / 2, t_mix), each brought to t_mix along that decay, so the tail
    continues the image sources without a step. (Specular shoebox ISM has 1-8 dB more energy than the statistical
    4*pi*c/(V*fs) * exp(-decay t), which is the fallback when no reflection falls in the window.)"""
    c, fs = SPEED_OF_SOUND, SAMPLE_RATE
    volume = dims.prod(-1)
    surface = 2 * (dims[:, 0] * dims[:, 1] + dims[:, 1] * dims[:, 2] + dims[:, 0] * dims[:, 2])
    decay = -torch.log1p(-alpha.clamp(max=1 - 1e-12)) * c * surface / (4 * volume)  # (B,) 1/s
    win = (order >= 1) & (t_img >= 0.5 * t_mix[:, None]) & (t_img < t_mix[:, None])  # (B, I)
    e_ism = (win * gain ** 2 * torch.exp(-decay[:, None] * (t_mix[:, None] - t_img))).sum(1) / (0.5 * t_mix * fs)
    e_stat = 4 * math.pi * c / (volume * fs) * torch.exp(-decay * t_mix)
    e_mix = torch.where(win.any(1), e_ism, e_stat) * (alpha < 1)
    return decay, e_mix


def diffuse_tail(decay, e_mix, t_mix, table, ir_len, seeds, bank_seed, fade):
    """(B, 2, L) late reverberation: energy per sample e_mix * exp(-decay (t - t_mix)) after t_mix, on binaural
    diffuse noise (a bank member at a random circular shift and sign)."""
    B, dev, fs = len(decay), table.device, SAMPLE_RATE
    bank_len = 1 << max(ir_len - 1, 1).bit_length()
    bank = noise_bank(table, bank_len, bank_seed)  # (M, 2, 2 * bank_len)
    seeds = np.zeros(B, np.int64) if seeds is None else np.asarray(seeds)
    draws = np.array([np.random.default_rng([int(bank_seed), int(s)]).integers(0, [len(bank), bank_len, 2])
                      for s in seeds])  # per-IR draws, so an IR does not depend on its batch mates
    pick, shift = torch.as_tensor(draws[:, 0], device=dev), torch.as_tensor(draws[:, 1], device=dev)
    noise = bank.unfold(2, ir_len, 1)[pick, :, shift]  # (B, 2, L) slices of the doubled bank
    sign = torch.as_tensor(2 * draws[:, 2] - 1.0, device=dev)
    level = torch.sqrt(e_mix) * torch.exp(0.5 * decay * t_mix) * sign  # amplitude at t = 0 of the decay line
    # exp(-k t) on a coarse grid times exp(-k j) for the offsets j inside a step: a multiply, not an exp per sample
    step = 64
    coarse = torch.arange(0, ir_len + step, step, device=dev, dtype=torch.float64) / fs  # (C,)
    half = -0.5 * decay[:, None]  # amplitude decays at half the energy rate
    env = torch.exp(half * coarse)[:, :, None] * torch.exp(half * torch.arange(step, device=dev) / fs)[:, None, :]
    env = level[:, None] * env.reshape(B, -1)[:, :ir_len]  # (B, L), float64: large before t_mix, zeroed next
    # raised-cosine fade-in around t_mix (the image sources fade out there); zero before it
    t_end = int(math.ceil((float(t_mix.max()) + fade / 2) * fs)) + 1
    t = torch.arange(min(t_end, ir_len), device=dev, dtype=torch.float64) / fs
    env[:, :len(t)] *= 0.5 + 0.5 * torch.sin(torch.pi * ((t - t_mix[:, None]) / fade).clamp(-0.5, 0.5))
    return noise * env.float()[:, None, :]


def apply_air_absorption(ir, n_fft=512, hop=256):
    """Time-frequency gain 10^(-a(f) * c * t / 20): the sound at time t has travelled c*t metres."""
    B, _, L = ir.shape
    win = torch.hann_window(n_fft, device=ir.device)
    spec = torch.stft(ir.reshape(B * 2, L), n_fft, hop, window=win, return_complex=True)  # (2B, F, frames)
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    db_per_m = torch.as_tensor(air_absorption_db_per_m(freqs), device=ir.device, dtype=torch.float32)
    dist = torch.arange(spec.shape[-1], device=ir.device) * hop / SAMPLE_RATE * SPEED_OF_SOUND
    spec = spec * 10 ** (-db_per_m[:, None] * dist[None, :] / 20)
    return torch.istft(spec, n_fft, hop, window=win, length=L).reshape(B, 2, L)

# -----------------------------------------------------------------------------
# the public one-IR function

def check_geometry(room_dims, absorption, listener, source):
    """Raise ValueError naming the bad value and the allowed range."""
    dims = [float(v) for v in room_dims]
    if len(dims) != 3 or not all(math.isfinite(v) and v > 0 for v in dims):
        raise ValueError(f"room_dims {room_dims!r}: expected three finite sizes > 0 m (Lx, Ly, Lz)")
    a = float(absorption)
    if not (0.0 < a <= 1.0):
        raise ValueError(f"absorption {absorption!r} outside the allowed range (0, 1]")
    box = ' x '.join(f'[0, {v:g}]' for v in dims)
    for name, p in (('listener', listener), ('source', source)):
        p = [float(v) for v in p]
        bad = [f"{ax}={v:g} not in [0, {lim:g}]" for ax, v, lim in zip('xyz', p, dims) if not (0.0 <= v <= lim)]
        if len(p) != 3 or bad:
            raise ValueError(f"{name} position {tuple(p)} is outside the room {box} m ({', '.join(bad)})")
    dist = math.dist([float(v) for v in listener], [float(v) for v in source])
    if not (MIN_DISTANCE <= dist <= MAX_DISTANCE):
        raise ValueError(f"source-listener distance {dist:.3f} m outside the allowed range "
                         f"[{MIN_DISTANCE}, {MAX_DISTANCE}] m")


def binaural_rir(room_dims, absorption, listener, source, max_order=6, head='kemar', air_absorption=True,
                 tail=True, ir_seconds=1.0, seed=0, device='cpu', hrtf_cache=DEFAULT_HRTF_CACHE):
    """One binaural IR, (2, L) float32 numpy at 32 kHz, channel 0 = left ear, L = round(ir_seconds * 32000).
    room_dims (Lx, Ly, Lz) m; absorption in (0, 1] (broadband, all walls); listener/source (x, y, z) inside the
    room, Habitat axes, listener facing -Z; head 'kemar' | 'none' (omnidirectional point at the head centre) |
    path to an HRTF .npz; max_order: image-source order; tail: diffuse late part decaying at the Eyring RT60."""
    check_geometry(room_dims, absorption, listener, source)
    table = get_table(head, hrtf_cache, device)
    ir = render_batch([room_dims], [absorption], [listener], [source], table, max_order,
                      int(round(ir_seconds * SAMPLE_RATE)), air_absorption, tail, seeds=[seed], bank_seed=seed)
    return ir[0].cpu().numpy().astype(np.float32)

# -----------------------------------------------------------------------------
# optional SoundSpaces 2.0 backend (habitat-sim built with --audio). It cannot be installed or run here, so it
# is untested: a thin wrapper following SoundSpaces' documented audio-sensor calls, kept for users who have it.

def soundspaces_rirs(scene, pairs, scene_dataset_config='', materials_json='', ir_seconds=2.0):
    """Binaural IRs rendered by SoundSpaces 2.0 in a scene mesh (e.g. an MP3D .glb) for (sensor, source) position
    pairs in the scene's Habitat coordinates -> list of (2, L) float32 at 32 kHz (same layout as binaural_rir)."""
    try:
        import habitat_sim
    except ImportError:
        raise ImportError("soundspaces_rirs needs habitat-sim built with audio (SoundSpaces 2.0), which is not "
                          "installed; use binaural_rir (the shoebox renderer) instead") from None
    backend = habitat_sim.SimulatorConfiguration()
    backend.scene_id = scene
    if scene_dataset_config:
        backend.scene_dataset_config_file = scene_dataset_config
    sim = habitat_sim.Simulator(habitat_sim.Configuration(backend, [habitat_sim.agent.AgentConfiguration()]))
    spec = habitat_sim.AudioSensorSpec()
    spec.uuid = 'audio_sensor'
    spec.enableMaterials = bool(materials_json)
    spec.channelLayout.channelType = habitat_sim.sensor.RLRAudioPropagationChannelLayoutType.Binaural
    spec.channelLayout.channelCount = 2
    spec.position = [0.0, 0.0, 0.0]  # the agent is put at the sensor position itself
    spec.acousticsConfig.sampleRate = SAMPLE_RATE
    spec.acousticsConfig.indirect = True  # reverberation, not only the direct sound
    sim.add_sensor(spec)
    agent = sim.get_agent(0)
    audio = agent._sensors['audio_sensor']
    if materials_json:
        audio.setAudioMaterialsJSON(materials_json)
    out, n = [], int(round(ir_seconds * SAMPLE_RATE))
    try:
        for sensor, source in pairs:
            audio.setAudioSourceTransform(np.asarray(source, dtype=np.float32))
            state = agent.get_state()
            state.position = np.asarray(sensor, dtype=np.float32)  # identity rotation: facing -Z, as ours
            state.sensor_states = {}
            agent.set_state(state, True)
            ir = np.asarray(sim.get_sensor_observations()['audio_sensor'], dtype=np.float32)[:2, :n]
            out.append(np.pad(ir, ((0, 0), (0, n - ir.shape[1]))))
    finally:
        sim.close()
    return out

# -----------------------------------------------------------------------------
# rooms and positions for the dataset

OCTANTS = [(lr, fb, ab) for lr in ('left', 'right') for fb in ('front', 'behind') for ab in ('above', 'below')]


ABSORPTION = (0.02, 0.99)  # the broadband absorption a room may take: a drawn RT60 outside what it gives is clipped
MIN_ROOM = 1.2  # m, the smallest side: the listener keeps 0.5 m from the walls


def check_ranges(room_min, room_max, rt60_min, rt60_max, max_order=0, ir_seconds=1.0, irs_per_room=1, n_rooms=(1, 1)):
    """The render settings, checked before any work: raises ValueError naming the setting and the allowed range.
    Returns (lo, hi): the RT60 range every room of the size range can reach (a drawn RT60 outside it is clipped)."""
    for name, v in (('room_min', room_min), ('room_max', room_max)):
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
            raise ValueError(f"{name} must be 3 numbers [Lx, Ly, Lz] in metres (Ly = height), got {v!r}")
        if min(v) < MIN_ROOM or not all(math.isfinite(x) for x in v):
            raise ValueError(f"{name} {v}: each side must be at least {MIN_ROOM} m (and finite)")
    if any(a > b for a, b in zip(room_min, room_max)):
        raise ValueError(f"room_max {room_max} must be at least room_min {room_min} in every dimension")
    if not (0 < rt60_min <= rt60_max):
        raise ValueError(f"RT60 range rt60_min {rt60_min} .. rt60_max {rt60_max}: expected 0 < rt60_min <= rt60_max (s)")
    if max_order < 0 or ir_seconds <= 0 or irs_per_room <= 0 or min(n_rooms) < 0:
        raise ValueError(f"expected max_order >= 0 (got {max_order}), ir_seconds > 0 ({ir_seconds}), irs_per_room > 0 "
                         f"({irs_per_room}), room counts >= 0 ({n_rooms})")
    shortest, longest = eyring_rt60(room_min, ABSORPTION[1]), eyring_rt60(room_max, ABSORPTION[0])
    if rt60_min > longest or rt60_max < shortest:
        raise ValueError(f"RT60 range {rt60_min}-{rt60_max} s cannot be reached by rooms from {room_min} to {room_max} "
                         f"m: with absorption {ABSORPTION[0]}-{ABSORPTION[1]} they give {shortest:.3f}-{longest:.2f} s")
    return eyring_rt60(room_max, ABSORPTION[1]), eyring_rt60(room_min, ABSORPTION[0])


def sample_room(rng, room_min, room_max, rt60_range, listener_height=1.6):
    """A shoebox, a broadband absorption giving an RT60 drawn log-uniformly in rt60_range (Eyring, clipped to
    absorption 0.02..0.99: a clipped room's alpha is exactly one of ABSORPTION), and a listener at head height,
    >= 0.5 m from the walls."""
    dims = rng.uniform(room_min, room_max)
    volume, surface = dims.prod(), 2 * (dims[0] * dims[1] + dims[1] * dims[2] + dims[0] * dims[2])
    target = math.exp(rng.uniform(math.log(rt60_range[0]), math.log(rt60_range[1])))
    alpha = float(np.clip(1 - math.exp(-24 * math.log(10) * volume / (SPEED_OF_SOUND * surface * target)), *ABSORPTION))
    height = min(listener_height + rng.uniform(-0.1, 0.1), dims[1] - 0.3)
    listener = np.array([rng.uniform(0.5, dims[0] - 0.5), height, rng.uniform(0.5, dims[2] - 0.5)])
    return dims, alpha, listener


def sample_source(rng, dims, listener, octant, dist_class, el_range=(-40.0, 90.0), margin=0.1, tries=30):
    """A source in `octant` (index into OCTANTS) at a distance rounding to dist_class (0.5 m steps), elevation in
    el_range (the HRTF's measured range), >= margin from the walls; None if none found in `tries` draws."""
    lr, fb, ab = OCTANTS[octant]
    az_lo = {('right', 'front'): 0, ('left', 'front'): 90, ('left', 'behind'): 180, ('right', 'behind'): 270}[(lr, fb)]
    s_lo, s_hi = (0.0, math.sin(math.radians(el_range[1]))) if ab == 'above' else (math.sin(math.radians(el_range[0])), 0.0)
    for _ in range(tries):
        r = rng.uniform(max(0.5, dist_class / 2 - 0.25), min(MAX_DISTANCE, dist_class / 2 + 0.25))
        az = math.radians(az_lo + rng.uniform(1, 89))  # keep 1 degree off the octant borders
        el = math.asin(rng.uniform(s_lo, s_hi) * 0.999 + (0.0005 if ab == 'above' else -0.0005))  # uniform on the sphere
        d = r * np.array([math.cos(el) * math.cos(az), math.sin(el), -math.cos(el) * math.sin(az)])  # Habitat axes (docs/conventions.md)
        p = listener + d
        if np.all(p >= margin) and np.all(p <= dims - margin):
            return p
    return None


def plan_room(seed, split, index, n_irs, room_min, room_max, rt60_range, el_range):
    """One room's geometry and n_irs sources cycling over the 8 octants and over the distance classes that fit."""
    rng = np.random.default_rng([seed, {'train': 0, 'eval': 1}[split], index])  # disjoint draws per split
    dims, alpha, listener = sample_room(rng, room_min, room_max, rt60_range)
    classes = rng.permutation(np.arange(1, 2 * int(MAX_DISTANCE) + 1))
    sources, ci = [], 0
    for k in range(n_irs):
        for attempt in range(len(classes)):  # the next class that fits this octant in this room
            p = sample_source(rng, dims, listener, k % len(OCTANTS), classes[(ci + attempt) % len(classes)], el_range)
            if p is not None:
                break
        ci += attempt + 1
        sources.append(p)
    return dims, alpha, listener, sources


def ir_seed(split, room_index, k):
    """A distinct int per IR, for its tail draws (so an IR's bytes do not depend on the batching)."""
    return ({'train': 0, 'eval': 1}[split] << 40) + (room_index << 16) + k


if __name__ == '__main__':
    import json
    import time
    from common import Progress, format_xyz, offset, distance_class, azimuth_deg, elevation_deg, \
        direction_words, write_jsonl, write_text
    # -----------------------------------------------------------------------------
    out_dir = 'out/rirs'  # writes binaural/<room_id>/<k>.npy, {train,eval}_reverberation.jsonl, summary.md
    seed = 1337  # any int; same seed, same bytes
    device = 'auto'  # 'auto' | 'cpu' | 'cuda' | 'cuda:N'
    n_train_rooms = 64  # train rooms (ids train_000 ...)
    n_eval_rooms = 16  # eval rooms, disjoint from train (own ids and own draws)
    irs_per_room = 32  # sources (IRs) per room, cycling over the 8 octants
    room_min = [3.0, 2.5, 3.0]  # smallest room (Lx, Ly, Lz) m, Habitat axes (Ly = height)
    room_max = [16.0, 6.0, 20.0]  # largest room, m (halls; distances up to 10 m fit)
    rt60_min = 0.2  # s, shortest Eyring RT60 drawn (log-uniform)
    rt60_max = 1.5  # s, longest
    max_order = 6  # image-source order of the early part (>= 0); the diffuse tail takes over after it
    ir_seconds = 2.0  # IR length, s (the official encoder crops IRs to 2 s)
    head = 'kemar'  # 'kemar' (MIT KEMAR from the slab wheel) | 'none' (omnidirectional) | path to an HRTF .npz
    hrtf_cache = DEFAULT_HRTF_CACHE  # where the converted 32 kHz KEMAR .npz is cached
    air_absorption = True  # ISO 9613-1 air absorption on/off
    tail = True  # diffuse late tail on/off (off: image sources only)
    batch_size = 64  # IRs rendered together
    # -----------------------------------------------------------------------------
    exec(open('configurator.py').read())
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        every_room = check_ranges(room_min, room_max, rt60_min, rt60_max, max_order, ir_seconds, irs_per_room,
                                  (n_train_rooms, n_eval_rooms))
    except ValueError as e:
        raise SystemExit(f"render: {e}") from None
    config = {k: globals()[k] for k in ['out_dir', 'seed', 'device', 'n_train_rooms', 'n_eval_rooms', 'irs_per_room',
                                        'room_min', 'room_max', 'rt60_min', 'rt60_max', 'max_order', 'ir_seconds',
                                        'head', 'air_absorption', 'tail', 'batch_size']}
    ir_len = int(round(ir_seconds * SAMPLE_RATE))
    t0 = time.time()
    torch.manual_seed(seed)
    table = get_table(head, hrtf_cache, device)
    print(f"render: HRTF {head} ({table.table.shape[0]} directions, elevations {table.el_range}), device {device}, "
          f"{ir_len} samples per IR")

    # plan every IR first (cheap, numpy), then render in batches
    plan, skipped = [], 0
    for split, n_rooms in (('train', n_train_rooms), ('eval', n_eval_rooms)):
        for i in range(n_rooms):
            room_id = f'{split}_{i:03d}'
            dims, alpha, lis, sources = plan_room(seed, split, i, irs_per_room, room_min, room_max,
                                                  (rt60_min, rt60_max), table.el_range)
            for k, src in enumerate(sources):
                if src is None:
                    skipped += 1
                    continue
                check_geometry(dims, alpha, lis, src)
                plan.append(dict(split=split, room_id=room_id, room_index=i, k=k, dims=dims, alpha=alpha, lis=lis, src=src))
    rooms = {(it['split'], it['room_index']): it['alpha'] for it in plan}
    clipped = sum(a in ABSORPTION for a in rooms.values())
    clip_note = (f"{clipped} of {len(rooms)} rooms could not reach the RT60 drawn for them (absorption clipped to "
                 f"{ABSORPTION[0]}-{ABSORPTION[1]}; every room from {room_min} to {room_max} m reaches "
                 f"{every_room[0]:.2f}-{every_room[1]:.2f} s); their RT60 in the index is what they have") if clipped else ''
    if clip_note:
        print(f"render: warning: {clip_note}")
    progress = Progress(len(plan), 'render', unit='IR')
    records = {'train': [], 'eval': []}
    for b0 in range(0, len(plan), batch_size):
        batch = plan[b0:b0 + batch_size]
        seeds = [ir_seed(it['split'], it['room_index'], it['k']) for it in batch]  # tail draws, per IR
        irs = render_batch([it['dims'] for it in batch], [it['alpha'] for it in batch], [it['lis'] for it in batch],
                           [it['src'] for it in batch], table, max_order, ir_len, air_absorption, tail, seeds, seed)
        irs = irs.cpu().numpy().astype(np.float32)
        for it, ir in zip(batch, irs):
            fname = f"{it['room_id']}/{it['k']}.npy"
            atomic_write(os.path.join(out_dir, 'binaural', fname), lambda f: np.save(f, ir), mode='wb')
            sensor, source = format_xyz(it['lis']), format_xyz(it['src'])
            d = offset(sensor, source)  # from the written strings, so readers recompute the same classes
            records[it['split']].append({
                'fname': fname, 'sensor_position': sensor, 'source_position': source,
                'agent_position': format_xyz([it['lis'][0], 0.0, it['lis'][2]]),  # Habitat agent = floor under the sensor
                'room_id': it['room_id'], 'room_dims': [round(float(v), 4) for v in it['dims']],
                'absorption': round(it['alpha'], 6), 'rt60': round(eyring_rt60(it['dims'], it['alpha']), 4),
                'distance': round(math.hypot(*d), 4), 'distance_class': distance_class(d),
                'azimuth': azimuth_deg(d), 'elevation': elevation_deg(d), 'direction': list(direction_words(d))})
        progress.update(len(batch))
    for split, recs in records.items():
        write_jsonl(os.path.join(out_dir, f'{split}_reverberation.jsonl'), recs)
    seconds = time.time() - t0

    # summary.md: counts per split, distance class and octant, RT60 range, time
    lines = ["# render.py output", f"{seconds:.1f} s on {device}; IRs (2, {ir_len}) float32, 32 kHz, channel 0 = left; "
             f"sources that found no position (skipped): {skipped}", "config: " + json.dumps(config)]
    lines += [f"RT60 warning: {clip_note}"] if clip_note else []
    for split, recs in records.items():
        rt = [r['rt60'] for r in recs] or [0.0]
        lines.append(f"## {split}: {len(recs)} IRs in {len({r['room_id'] for r in recs})} rooms, "
                     f"RT60 {min(rt):.2f}-{max(rt):.2f} s (Eyring, walls only: air absorption shortens the high bands)")
        dc = {c: sum(r['distance_class'] == c for r in recs) for c in range(21)}
        lines.append("distance class: " + ', '.join(f"{c}:{n}" for c, n in dc.items() if n))
        octs = {o: sum(tuple(r['direction']) == o for r in recs) for o in OCTANTS}
        lines.append("octant: " + ', '.join(f"{'-'.join(o)}:{n}" for o, n in octs.items()))
    write_text(os.path.join(out_dir, 'summary.md'), '\n\n'.join(lines) + '\n')
    print(f"render: {sum(map(len, records.values()))} IRs ({len(records['train'])} train, {len(records['eval'])} eval) "
          f"in {seconds:.1f} s -> {out_dir}")
