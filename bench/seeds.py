"""
Does the demo hold from seed to seed? Runs the demo's encoder, BAT and eval once per seed (the data stages, render,
sources and make_qa, are shared and reused when their outputs exist), then prints every Table-13 column per run, its
worst and median value over the runs beside Random, and the goal check: each column >= `margin` points better than
Random (DER: lower by >= margin) on every run.

    python bench/seeds.py                                   # seeds 1337,2,3 on the demo configs (~15 min a seed, 2 cores)
    python bench/seeds.py --seeds=1337 --threads=1 --out=out/seeds_1thread        # one seed on one thread
    python bench/seeds.py --seeds=1,2 --bat.stage_iters=[2,2,2] --eval.max_items=20 --encoder.max_iters=4   # smoke

Flags: --seeds=a,b,c  --threads=N (OMP/MKL threads of every stage; 0 = torch's default)  --out=DIR (per-seed
encoder/, bat/, eval/ and seeds.md)  --data=DIR (rirs/, sources/, qa/; out/demo = the demo's own)  --margin=10
--reuse=1 (a seed whose <out>/seed<N>/eval/metrics.json exists is summarised, not run again).
Any other --key=value goes to every stage; --<stage>.key=value to one stage (stage: render, sources, qa, encoder,
bat, eval), e.g. --qa.reasoning=True --eval.max_new_tokens=64.
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ('render', 'sources', 'qa', 'encoder', 'bat', 'eval')
# Table-13 columns: (metrics.json key, label, True where lower is better)
COLUMNS = [('A_mAP', 'A mAP', False), ('C_mAP', 'C mAP', False), ('B_doa_acc', 'B DoA', False),
           ('D_doa_acc', 'D DoA', False), ('B_der', 'B DER', True), ('D_der', 'D DER', True),
           ('E_direction_ba', 'E direction', False), ('E_distance_ba', 'E distance', False)]


def parse_args(argv):
    """-> (own settings, {stage: [flags]}); unprefixed flags go to every stage."""
    own = {'seeds': '1337,2,3', 'threads': 0, 'out': 'out/seeds', 'data': 'out/demo', 'margin': 10.0, 'reuse': 0}
    flags = {s: [] for s in STAGES}
    for arg in argv:
        if not arg.startswith('--') or '=' not in arg:
            raise SystemExit(f'seeds.py: expected --key=value, got {arg!r} (see the docstring)')
        key, value = arg[2:].split('=', 1)
        if key in own:
            own[key] = type(own[key])(value)
        elif '.' in key:
            stage, name = key.split('.', 1)
            if stage not in STAGES:
                raise SystemExit(f'seeds.py: unknown stage in {arg!r}; stages are {", ".join(STAGES)}')
            flags[stage].append(f'--{name}={value}')
        else:
            for s in STAGES:
                flags[s].append(arg)
    own['seeds'] = [int(s) for s in str(own['seeds']).split(',') if s.strip()]
    if not own['seeds']:
        raise SystemExit('seeds.py: --seeds= needs at least one seed, e.g. --seeds=1337,2,3')
    return own, flags


def commands(own, flags, seed):
    """The stage commands, in order: (stage, argv, output that marks it done or None)."""
    d, run = own['data'], os.path.join(own['out'], f'seed{seed}')
    py = sys.executable
    data = [('render', [py, 'render.py', 'config/demo_render.py', f'--out_dir={d}/rirs'],
             f'{d}/rirs/eval_reverberation.jsonl'),
            ('sources', [py, 'sources.py', 'config/demo_sources.py', f'--out_dir={d}/sources'],
             f'{d}/sources/sources.jsonl'),
            ('qa', [py, 'make_qa.py', 'config/demo_qa.py', f'--sources={d}/sources/sources.jsonl',
                    f'--render_dir={d}/rirs', f'--out_dir={d}/qa'], f'{d}/qa/meta.json')]
    per_seed = [('encoder', [py, 'train_encoder.py', 'config/demo_encoder.py', f'--sources={d}/sources/sources.jsonl',
                             f'--render_dir={d}/rirs', f'--out_dir={run}/encoder', f'--seed={seed}'], None),
                ('bat', [py, 'train_bat.py', 'config/demo_bat.py', f'--qa_dir={d}/qa',
                         f'--encoder_ckpt={run}/encoder/ckpt.pt', f'--out_dir={run}/bat', f'--seed={seed}'], None),
                ('eval', [py, 'eval.py', 'config/demo_eval.py', f'--ckpt={run}/bat/ckpt.pt', f'--out_dir={run}/eval'],
                 None)]
    return [(s, cmd + flags[s], done) for s, cmd, done in data + per_seed]


def run_stage(stage, cmd, threads, log_path):
    env = dict(os.environ, PYTHONUNBUFFERED='1', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if stage in ('bat', 'eval'):  # these two also set torch's thread count themselves
            cmd = cmd + [f'--threads={threads}']
    print(f"  {stage}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    with open(log_path, 'w') as log:
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f'seeds.py: stage {stage} failed (exit {p.returncode}); log {log_path}:\n{tail}')
    return time.time() - t0


def summarise(runs, margin):
    """runs: [(name, metrics dict of eval.py)] -> (markdown lines, every column passed on every run)."""
    fmt = lambda v: '-' if v is None else f'{v:.2f}'
    head = '| run | ' + ' | '.join(label for _, label, _ in COLUMNS) + ' |'
    lines = [head, '|' + '---|' * (len(COLUMNS) + 1)]
    for name, m in runs:
        lines.append(f'| {name} | ' + ' | '.join(f"{fmt(m[k])} ({fmt(m['random'][k])})" for k, _, _ in COLUMNS) + ' |')
    lines += ['', 'each cell: model (Random of the same eval); below, over the runs: the worst (minimum, DER maximum) '
              f'and the median, Random\'s median, and the goal: every run >= {margin:g} points better than its Random', '',
              '| column | worst | median | Random (median) | goal met on |', '|---|---|---|---|---|']
    all_ok = True
    for key, label, lower in COLUMNS:
        vals = [m[key] for _, m in runs if m[key] is not None]
        rand = [m['random'][key] for _, m in runs if m['random'][key] is not None]
        ok = [m[key] is not None and m['random'][key] is not None and
              ((m['random'][key] - m[key]) if lower else (m[key] - m['random'][key])) >= margin for _, m in runs]
        all_ok &= all(ok)
        worst = (max(vals) if lower else min(vals)) if vals else None
        lines.append(f'| {label} | {fmt(worst)} | {fmt(statistics.median(vals) if vals else None)} | '
                     f'{fmt(statistics.median(rand) if rand else None)} | {sum(ok)} of {len(runs)} |')
    lines += ['', f"goal (every column, every run, >= {margin:g} points over Random): {'MET' if all_ok else 'NOT MET'}"]
    return lines, all_ok


def encoder_lines(runs):
    lines = ['| run | encoder mAP | ER20 % | MAE deg | DER % |', '|---|---|---|---|---|']
    for name, m in runs:
        lines.append(f"| {name} | {m['mAP']:.1f} | {m['ER20']:.1f} | {m['MAE_deg']:.1f} | {m['DER']:.1f} |")
    return lines


if __name__ == '__main__':
    own, flags = parse_args(sys.argv[1:])
    os.makedirs(own['out'], exist_ok=True)
    t_all, runs, enc_runs, times = time.time(), [], [], {}
    for seed in own['seeds']:
        run_dir = os.path.join(own['out'], f'seed{seed}')
        os.makedirs(run_dir, exist_ok=True)
        print(f'=== seed {seed} ({run_dir})', flush=True)
        finished = os.path.exists(os.path.join(run_dir, 'eval', 'metrics.json'))
        if own['reuse'] and finished:  # e.g. seeds run in parallel processes, or the demo's own out/demo copied here
            print('  reused: its eval/metrics.json is there', flush=True)
        for stage, cmd, done in commands(own, flags, seed) if not (own['reuse'] and finished) else []:
            if done and os.path.exists(os.path.join(ROOT, done)):
                continue  # a shared data stage already there
            log = os.path.join(own['out'], f'{stage}.log') if done else os.path.join(run_dir, f'{stage}.log')
            times[(seed, stage)] = run_stage(stage, cmd, own['threads'], log)
        with open(os.path.join(run_dir, 'eval', 'metrics.json')) as f:
            runs.append((f'seed {seed}', json.load(f)))
        with open(os.path.join(run_dir, 'encoder', 'metrics.json')) as f:
            enc_runs.append((f'seed {seed}', json.load(f)))
        print(f"  seed {seed} done: " + ', '.join(f'{s} {t:.0f}s' for (k, s), t in times.items() if k == seed))
    lines, _ = summarise(runs, own['margin'])
    argv = ' '.join(sys.argv[1:])
    text = '\n'.join([f'# seeds: python bench/seeds.py {argv}', '', f"threads: {own['threads'] or 'torch default'}; "
                      f'total {time.time() - t_all:.0f} s', ''] + lines + ['', '## encoders (fixed eval set)', '']
                     + encoder_lines(enc_runs)) + '\n'
    with open(os.path.join(own['out'], 'seeds.md'), 'w') as f:
        f.write(text)
    print('\n' + text + f"\nwritten to {own['out']}/seeds.md")
