"""
Run a stage script with recording hooks, so a test can see what the training loop really did:

    python tests/script_hooks.py <out> train_encoder.py [config] [--key=value ...]
    python -m torch.distributed.run --nproc_per_node=2 tests/script_hooks.py <out> train_bat.py ...
    hooks.run_script(<out>, 'train_encoder.py', [...])      # the same in the test's own process

Each process appends JSON lines to <out>/rank<R>.jsonl:
- {"item": ..., "kind": ...}: an item it loaded: a clip path ("clip", features.AudioCache.clip) or a QA question_id
  ("question", features.qa_waveforms, which train_bat.py calls every step with cache_tokens=False);
- {"backward": ...}: at every loss.backward(), the loss value and d(loss)/d(part) for each part the loss is made of:
  the BCE output ("bce", a scalar) and each cross-entropy output, named by its number of classes (21 distance,
  360 azimuth, 180 elevation; the LLM's own: its vocabulary), summed over its rows, and its number of input rows;
and <out>/grads<R>.pt: the gradients the first optimizer step applies, in parameter order.
With HOOKS_COMPILE_BACKEND set (e.g. aot_eager), torch.compile uses that backend: the graph capture and autograd of
the script's model without minutes of C++ code generation.
Nothing of the scripts is changed: the hooks wrap torch and features functions the scripts call.
"""
import ast
import json
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install(out):
    """Patch torch and features; returns a function that undoes it."""
    import torch
    import torch.nn.functional as F
    import features
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get('RANK', 0))
    log = out / f'rank{rank}.jsonl'

    def write(obj):
        with open(log, 'a') as f:
            f.write(json.dumps(obj) + '\n')

    saved = {}

    def patch(owner, name, new):
        saved[(owner, name)] = getattr(owner, name)
        setattr(owner, name, new)

    parts = []  # (name, output tensor, input rows) of the loss pieces computed since the last backward

    def bce(x, *a, **k):
        y = saved[(F, 'binary_cross_entropy_with_logits')](x, *a, **k)
        if y.requires_grad:
            parts.append(('bce', y, x.shape[0]))
        return y

    def ce(x, *a, **k):
        y = saved[(F, 'cross_entropy')](x, *a, **k)
        if y.requires_grad:
            parts.append((str(x.shape[-1]), y, x.shape[0]))
        return y

    def backward(self, *a, **k):
        if parts and self.requires_grad:
            grads = torch.autograd.grad(self, [y for _, y, _ in parts], retain_graph=True, allow_unused=True)
            write({'backward': {'loss': self.item(), 'parts': [
                [name, 0.0 if g is None else g.sum().item(), rows] for (name, _, rows), g in zip(parts, grads)]}})
        parts.clear()
        return saved[(torch.Tensor, 'backward')](self, *a, **k)

    clip = features.AudioCache.clip

    def record_clip(self, path, *a, **k):
        write({'item': str(path), 'kind': 'clip'})
        return clip(self, path, *a, **k)

    def record_records(records, *a, **k):
        for r in records:
            write({'item': r.get('question_id'), 'kind': 'question'})
        return saved[(features, 'qa_waveforms')](records, *a, **k)

    class RecordingAdamW(torch.optim.AdamW):
        first = True

        def step(self, *a, **k):
            if RecordingAdamW.first:
                RecordingAdamW.first = False
                grads = [p.grad.detach().clone() if p.grad is not None else None
                         for g in self.param_groups for p in g['params']]
                torch.save(grads, out / f'grads{rank}.pt')
            return super().step(*a, **k)

    patch(F, 'binary_cross_entropy_with_logits', bce)
    patch(F, 'cross_entropy', ce)
    patch(torch.Tensor, 'backward', backward)
    patch(features.AudioCache, 'clip', record_clip)
    patch(features, 'qa_waveforms', record_records)
    patch(torch.optim, 'AdamW', RecordingAdamW)
    if os.environ.get('HOOKS_COMPILE_BACKEND'):
        compile_ = torch.compile
        patch(torch, 'compile', lambda model, **k: compile_(model, **{**k, 'backend': os.environ['HOOKS_COMPILE_BACKEND']}))

    def undo():
        for (owner, name), value in saved.items():
            setattr(owner, name, value)
    return undo


def run_here(*args, env=None):
    """`python <args>` in the repo root, run in this process: exit code, stdout and stderr as subprocess.run would give
    them (torch is imported once per test process instead of once per call, ~3 s each: most of the suite's time
    otherwise). SystemExit('message') exits 1 with the message on stderr, as Python does; any other exception is a
    traceback on stderr. What the script changes (argv, cwd, environment, torch threads) is put back; env: extra
    environment variables for the run."""
    import contextlib
    import io
    import subprocess
    import traceback
    import torch
    args = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv, os.getcwd(), dict(os.environ), torch.get_num_threads()
    sys.argv = args
    os.chdir(ROOT)
    os.environ.update({'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', **(env or {})})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(ROOT / args[0]), run_name='__main__')
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        os.environ.clear()
        os.environ.update(saved[2])
        torch.set_num_threads(saved[3])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_ok(*args, env=None):
    """run_here that must succeed: its stdout (else the test fails with the script's last output)."""
    p = run_here(*args, env=env)
    assert p.returncode == 0, f"{args[:2]} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def run_script(out, script, args):
    """Run ROOT/script as __main__ in this process with the hooks on (argv = args); raises if it fails."""
    undo = install(out)
    try:
        p = run_here(script, *args)
    finally:
        undo()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def read(out, rank=0, kind='clip'):
    """(items of that kind ('clip' or 'question'), backward records, first-step gradients) that rank wrote."""
    import torch
    out = Path(out)
    rows = [json.loads(line) for line in (out / f'rank{rank}.jsonl').read_text().splitlines()] \
        if (out / f'rank{rank}.jsonl').exists() else []
    grads = torch.load(out / f'grads{rank}.pt', weights_only=True) if (out / f'grads{rank}.pt').exists() else None
    return [r['item'] for r in rows if r.get('kind') == kind], [r['backward'] for r in rows if 'backward' in r], grads


def grad_difference(got, want):
    """Largest gap between two first-step gradient lists, each parameter's relative to its own largest entry (float32
    sums in another order stay under ~1e-5, ~100 ulps); parameters without a gradient are skipped."""
    return max(((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item() for a, b in zip(got, want) if a is not None)


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    install(sys.argv[1])
    script = sys.argv[2]
    sys.argv = [script] + sys.argv[3:]
    runpy.run_path(str(ROOT / script), run_name='__main__')


# -----------------------------------------------------------------------------
# the stage scripts' settings and the config files, read the way the scripts read them

def _is_configurator_call(node):
    return isinstance(node, ast.Expr) and 'configurator.py' in ast.unparse(node)


def _settings_in(body, out):
    for node in body:
        if _is_configurator_call(node):
            return True
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    try:
                        out[t.id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[t.id] = None  # not a literal (a computed default): a known key all the same
    return False


def script_settings(script):
    """{name: default} of a stage script's settings: the plain assignments before its exec(configurator.py) line, at
    the top level and in its `if __name__ == '__main__':` block."""
    tree = ast.parse((ROOT / script).read_text())
    out = {}
    if _settings_in(tree.body, out):
        return out
    for node in tree.body:
        if isinstance(node, ast.If) and '__main__' in ast.unparse(node.test):
            if _settings_in(node.body, out):
                return out
    raise AssertionError(f'{script}: no exec(open(configurator.py)) line found')


def stage_scripts():
    return sorted(p.name for p in ROOT.glob('*.py') if p.name != 'configurator.py'
                  and "exec(open('configurator.py').read())" in p.read_text())


def config_keys(config):
    """The settings a config file assigns (names starting with _ are its own helpers)."""
    tree = ast.parse((ROOT / config).read_text())
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name) and not t.id.startswith('_')}


def owners(config):
    """The stage scripts that have every setting the config assigns."""
    keys = config_keys(config)
    return [s for s in stage_scripts() if keys <= set(script_settings(s))]


def configs_of(script):
    return [str(p.relative_to(ROOT)) for p in sorted((ROOT / 'config').glob('*.py')) if script in owners(p)]


def read_config(script, *args):
    """The script's settings after configurator.py has applied args (config files, --key=value), as the script
    would see them."""
    namespace = dict(script_settings(script))
    argv = sys.argv
    sys.argv = [script] + [str(a) for a in args]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec((ROOT / 'configurator.py').read_text(), namespace)
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return namespace
