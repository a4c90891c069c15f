"""configurator.py: config files and --key=value override a script's globals; bad keys/types fail naming the key."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
\"\"\"A stage script.

    python stage.py --max_iters=5
\"\"\"
learning_rate = 6e-4  # float
max_iters = 100       # int: a comment that goes on
                      # on the next line
device = 'cpu'        # str
compile = False       # bool
stage_iters = [1, 2, 3]
exec(open({configurator!r}).read())
print(repr((learning_rate, max_iters, device, compile, stage_iters)))
"""


def run(tmp_path, *args):
    script = tmp_path / 'stage.py'
    script.write_text(SCRIPT.format(configurator=str(ROOT / 'configurator.py')))
    return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True)


def test_defaults_untouched(tmp_path):
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == repr((6e-4, 100, 'cpu', False, [1, 2, 3]))


def test_config_file_then_flags_in_order(tmp_path):
    (tmp_path / 'cfg.py').write_text("max_iters = 7\ndevice = 'cuda'\nlearning_rate = 1e-3\n")
    r = run(tmp_path, 'cfg.py', '--device=cpu', '--compile=True', '--learning_rate=1', '--stage_iters=[4, 5, 6]')
    assert r.returncode == 0, r.stderr
    # the flag after the file wins for device; the file's max_iters stays; an int is accepted for a float
    assert r.stdout.strip().splitlines()[-1] == repr((1.0, 7, 'cpu', True, [4, 5, 6]))


def test_unknown_key_names_it(tmp_path):
    r = run(tmp_path, '--max_itres=5')
    assert r.returncode != 0
    assert "max_itres" in r.stderr and 'unknown' in r.stderr


def test_wrong_type_names_key_and_types(tmp_path):
    r = run(tmp_path, '--max_iters=fast')
    assert r.returncode != 0
    assert "max_iters" in r.stderr and 'int' in r.stderr and 'str' in r.stderr


def test_missing_config_file(tmp_path):
    r = run(tmp_path, 'nope.py')
    assert r.returncode != 0 and 'nope.py' in r.stderr


def test_flag_without_value(tmp_path):
    r = run(tmp_path, '--compile')
    assert r.returncode != 0 and '--compile' in r.stderr


def test_help_prints_docstring_and_settings(tmp_path):
    for flag in ('--help', '-h'):
        r = run(tmp_path, '--max_iters=5', flag)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == 'A stage script.' and 'python stage.py --max_iters=5' in r.stdout
        # each setting with its default (not the override: help comes first) and its whole comment
        assert any(l.split() == ['--max_iters=100', 'int:', 'a', 'comment', 'that', 'goes', 'on', 'on', 'the', 'next',
                                 'line'] for l in lines), r.stdout
        assert any(l.strip() == "--stage_iters=[1, 2, 3]" for l in lines)
        assert "--device='cpu'" in r.stdout and '--learning_rate=0.0006 float' in ' '.join(r.stdout.split())


def test_every_config_file_belongs_to_a_stage_script():
    """Each config/*.py sets only settings one of the stage scripts has (a stale or misspelt key is an error, since
    the configurator runs config files as plain Python), with the default's type, read through configurator.py."""
    import script_hooks as hooks
    configs = sorted((ROOT / 'config').glob('*.py'))
    assert configs
    for config in configs:
        name = str(config.relative_to(ROOT))
        keys, owners = hooks.config_keys(name), hooks.owners(name)
        if not owners:
            unknown = {s: sorted(keys - set(hooks.script_settings(s))) for s in hooks.stage_scripts()}
            raise AssertionError(f'{name}: no stage script has all of its settings; unknown per script: {unknown}')
        for script in owners:
            defaults, read = hooks.script_settings(script), hooks.read_config(script, name)
            for k in keys:
                if defaults[k] is not None and not (isinstance(defaults[k], float) and type(read[k]) is int):
                    assert type(read[k]) is type(defaults[k]), f'{name}: {k} = {read[k]!r}, {script} expects ' \
                                                               f'{type(defaults[k]).__name__}'
