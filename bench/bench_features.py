"""
Speed of features.binaural_features vs the librosa/numpy reference of the official front end, same batch, one run.

    python bench/bench_features.py                       # CPU: 16 clips of 10 s, batches of 4, vs the reference
    python bench/bench_features.py --threads=1           # the same on one thread
    python bench/bench_features.py --device=cuda --n_clips=2048 --batch=256   # GPU: clips/s of ours only

Prints clips/s for both and the ratio (ours / reference). The reference runs on CPU only (numpy); its BLAS products
are timed both with OpenBLAS's threads and on one thread, and the faster is kept (see reference_blas_settings).
"""
import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import features  # noqa: E402


def reference_features(wav, W):
    """librosa STFT + numpy: the official steps 1-10 for one (2, N) clip -> (4, T, 128)."""
    import librosa
    X = [librosa.stft(ch, n_fft=1024, hop_length=320, win_length=1024, window='hann', center=True,
                      pad_mode='reflect') for ch in wav]
    logmel = [10 * np.log10(np.maximum(W @ np.abs(x), 1e-10)) for x in X]
    ipd = np.angle(X[1]) - np.angle(X[0])
    return np.stack(logmel + [W @ np.cos(ipd), W @ np.sin(ipd)]).transpose(0, 2, 1)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n_clips', type=int, default=16)
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--seconds', type=float, default=10.0)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0 = leave the default)')
    ap.add_argument('--repeats', type=int, default=7)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal((args.n_clips, 2, int(32000 * args.seconds)))).astype(np.float32)
    print(f'{args.n_clips} binaural clips of {args.seconds} s, batch {args.batch}, torch threads '
          f'{torch.get_num_threads()}, device {args.device}')
    x = torch.from_numpy(wav).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None)

    def ours():
        for i in range(0, args.n_clips, args.batch):
            features.binaural_features(x[i:i + args.batch])
        sync()
    ours()  # warm-up (allocations, mel bands, cuFFT plans)
    if args.device != 'cpu':
        best = min(timed(ours) for _ in range(args.repeats))
        print(f'ours      {args.n_clips / best:10.1f} clips/s')
        return
    import librosa
    W = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=128, fmin=50, fmax=14000)
    ref = lambda: [reference_features(clip, W) for clip in wav]
    blas_settings = reference_blas_settings()
    for blas in blas_settings:  # warm-up
        timed_with(blas, ref)
    # interleaved, so that both see the same machine load; each round times the reference under every BLAS setting
    # and keeps its fastest, so it is never slower than as-is
    t_ours, t_ref = [], []
    for _ in range(args.repeats):
        t_ours.append(timed(ours))
        t_ref.append(min(timed_with(blas, ref) for blas in blas_settings))
    o, r = args.n_clips / min(t_ours), args.n_clips / min(t_ref)
    print(f'ours      {o:10.1f} clips/s  ({1000 / o:.1f} ms per clip)')
    print(f'reference {r:10.1f} clips/s  ({1000 / r:.1f} ms per clip)')
    print(f'ratio     {o / r:10.2f}x  (best of {args.repeats}; median ratio '
          f'{float(np.median(np.array(t_ref) / np.array(t_ours))):.2f}x)')


def reference_blas_settings():
    """The reference's mel products (128 x 513 x T) are big enough for OpenBLAS to run them on its own threads,
    which stall (x4 measured) when other processes share the cores: so it is timed with BLAS as-is and on one thread."""
    try:
        from threadpoolctl import threadpool_limits  # comes with librosa (through scikit-learn)
    except ImportError:
        return [contextlib.nullcontext]
    return [contextlib.nullcontext, lambda: threadpool_limits(1, user_api='blas')]


def timed_with(blas, fn):
    with blas():
        return timed(fn)


if __name__ == '__main__':
    main()
