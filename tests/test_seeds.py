"""bench/seeds.py: flags split per stage, the stage commands, and the worst/median table with the goal check."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
import seeds  # noqa: E402


def test_flags_go_to_their_stages():
    own, flags = seeds.parse_args(['--seeds=5,6', '--threads=1', '--device=cpu', '--bat.stage_iters=[1,1,1]',
                                   '--qa.reasoning=True'])
    assert own['seeds'] == [5, 6] and own['threads'] == 1 and own['data'] == 'out/demo'
    assert all('--device=cpu' in f for f in flags.values())
    assert flags['bat'] == ['--device=cpu', '--stage_iters=[1,1,1]'] and '--reasoning=True' in flags['qa']
    assert '--stage_iters=[1,1,1]' not in flags['encoder']
    cmds = {s: c for s, c, _ in seeds.commands(own, flags, 6)}
    assert list(cmds) == list(seeds.STAGES)
    assert '--encoder_ckpt=out/seeds/seed6/encoder/ckpt.pt' in cmds['bat'] and '--seed=6' in cmds['encoder']
    assert cmds['bat'][2] == 'config/demo_bat.py' and cmds['bat'][-1] == '--stage_iters=[1,1,1]'  # user flags last
    for bad in (['--nope.x=1'], ['seeds=1'], ['--seeds=']):
        with pytest.raises(SystemExit):
            seeds.parse_args(bad)


def metrics(a, rand_a, der, rand_der):
    m = {k: a for k, _, lower in seeds.COLUMNS if not lower} | {k: der for k, _, lower in seeds.COLUMNS if lower}
    r = {k: rand_a for k, _, lower in seeds.COLUMNS if not lower} | {k: rand_der for k, _, lower in seeds.COLUMNS if lower}
    return {**m, 'random': r}


def test_worst_median_and_goal():
    runs = [('s1', metrics(70.0, 50.0, 40.0, 86.0)), ('s2', metrics(65.0, 50.0, 30.0, 86.0)),
            ('s3', metrics(61.0, 50.0, 35.0, 86.0))]
    lines, ok = seeds.summarise(runs, 10.0)
    assert ok and '| A mAP | 61.00 | 65.00 | 50.00 | 3 of 3 |' in lines
    assert '| B DER | 40.00 | 35.00 | 86.00 | 3 of 3 |' in lines  # worst DER is the highest
    runs[2] = ('s3', metrics(59.0, 50.0, 80.0, 86.0))  # 9 points over Random; DER only 6 lower
    lines, ok = seeds.summarise(runs, 10.0)
    assert not ok and '| E direction | 59.00 | 65.00 | 50.00 | 2 of 3 |' in lines
    assert '| D DER | 80.00 | 40.00 | 86.00 | 2 of 3 |' in lines and lines[-1].endswith('NOT MET')


def test_reuse_summarises_finished_seeds(tmp_path):
    """--reuse=1: a seed whose eval/metrics.json is there runs no stage (its encoder and eval metrics are read)."""
    import json
    import subprocess
    for seed in (7, 8):
        for part, m in (('eval', metrics(60.0, 50.0, 40.0, 86.0)),
                        ('encoder', {'mAP': 80.0, 'ER20': 70.0, 'MAE_deg': 50.0, 'DER': 30.0})):
            (tmp_path / f'seed{seed}' / part).mkdir(parents=True)
            (tmp_path / f'seed{seed}' / part / 'metrics.json').write_text(json.dumps(m))
    p = subprocess.run([sys.executable, 'bench/seeds.py', '--seeds=7,8', '--reuse=1', f'--out={tmp_path}',
                        f'--data={tmp_path / "no_data"}'], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count('reused') == 2 and 'render' not in p.stdout
    assert '| A mAP | 60.00 | 60.00 | 50.00 | 2 of 2 |' in (tmp_path / 'seeds.md').read_text()
