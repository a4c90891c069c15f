"""
Speed of render.py (binaural, KEMAR HRTF, diffuse tail) vs pyroomacoustics' image-source method (mono), same
rooms, same image-source order, same sample rate, one run.

    python bench/bench_render.py                                   # CPU, 64 rooms, order 6, 1 s IRs
    python bench/bench_render.py --threads=1 --order=10            # one thread each, order 10
    python bench/bench_render.py --device=cuda --n_rooms=4096 --batch=512 --skip_pra   # GPU: IRs/s for ours

Prints IRs/s for both and the ratio (ours / pyroomacoustics); > 1 means ours renders more IRs per second.
Both without air absorption (pyroomacoustics' default); pyroomacoustics' IR ends after its last image source,
ours is ir_seconds long and includes the late tail. Ours is also timed with air absorption on.
Each side's best of --repeats interleaved runs is kept (the machine may be shared).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import render  # noqa: E402


def rooms(n, seed):
    """n (dims, absorption, listener, source) drawn like render.py's train rooms, one source each."""
    out = []
    for i in range(n):
        dims, alpha, lis, sources = render.plan_room(seed, 'train', i, 1, [3.0, 2.5, 3.0], [16.0, 6.0, 20.0],
                                                     (0.2, 1.5), (-40.0, 90.0))
        if sources[0] is not None:
            out.append((dims, alpha, lis, sources[0]))
    return out


def time_pra(rs, order):
    import pyroomacoustics as pra
    t0 = time.perf_counter()
    for dims, alpha, lis, src in rs:
        room = pra.ShoeBox(dims, fs=render.SAMPLE_RATE, materials=pra.Material(alpha), max_order=order,
                           air_absorption=False)
        room.add_source(src)
        room.add_microphone(lis)
        room.compute_rir()
    return time.perf_counter() - t0


def time_ours(rs, order, ir_len, batch, table, air):
    t0 = time.perf_counter()
    for b in range(0, len(rs), batch):
        part = rs[b:b + batch]
        ir = render.render_batch(*[[r[j] for r in part] for j in range(4)], table, order, ir_len, air, True,
                                 seeds=list(range(b, b + len(part))), bank_seed=0)
    if ir.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--n_rooms', type=int, default=64)
    ap.add_argument('--order', type=int, default=6)
    ap.add_argument('--ir_seconds', type=float, default=1.0)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--skip_pra', action='store_true')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--threads', type=int, default=0, help='threads for both (torch and pyroomacoustics); 0 = defaults')
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        if not args.skip_pra:
            import pyroomacoustics as pra
            pra.constants.set('num_threads', args.threads)
    rs = rooms(args.n_rooms, seed=0)
    table = render.get_table('kemar', device=args.device)
    ir_len = int(args.ir_seconds * render.SAMPLE_RATE)
    time_ours(rs[:min(8, len(rs))], args.order, ir_len, args.batch, table, False)  # warm-up: lattice, noise bank
    print(f"{len(rs)} rooms, order {args.order}, {render.SAMPLE_RATE} Hz, torch threads {torch.get_num_threads()}, "
          f"device {args.device}")
    # the machine may be shared: interleave the two and keep each one's best of `repeats` runs
    ours, ref, air = [], [], []
    for _ in range(args.repeats):
        ours.append(time_ours(rs, args.order, ir_len, args.batch, table, False))
        if not args.skip_pra:
            ref.append(time_pra(rs, args.order))
        air.append(time_ours(rs, args.order, ir_len, args.batch, table, True))
    print(f"ours (binaural, KEMAR, tail, {args.ir_seconds:g} s): {len(rs) / min(ours):8.1f} IRs/s")
    print(f"ours with air absorption:            {len(rs) / min(air):8.1f} IRs/s")
    if ref:
        print(f"pyroomacoustics ISM (mono):          {len(rs) / min(ref):8.1f} IRs/s")
        print(f"ratio ours/pyroomacoustics: {min(ref) / min(ours):.2f}x (air absorption on: {min(ref) / min(air):.2f}x)")
