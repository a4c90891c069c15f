"""
Our small config overrider, in the nanoGPT manner. A stage script declares its settings as plain
module-level globals (each with a comment), then runs

    exec(open('configurator.py').read())

which reads sys.argv: every argument without '=' is a config file (plain Python that assigns globals,
run in the script's namespace, e.g. config/demo_encoder.py), every `--key=value` overrides one global.
They apply in command-line order, so flags after a config file win over it.

Rules (checked, with an error that names the key):
- `--key` must already exist as a global of the script (no typos silently creating new settings);
- the value is parsed with ast.literal_eval (so 3, 1e-4, True, 'str', [1, 2] work), else kept as a string;
- the parsed type must match the default's type, except that an int is accepted for a float.
`--help` (or `-h`) prints the script's docstring and every setting with its default and its comment, then exits.
"""
import ast
import builtins
import os
import sys


def _settings(namespace):
    """(the script's docstring, [(key, default, comment)]) of the script: the plain `key = value` lines above the line that runs this file,
    at the top level or in its `if __name__ == '__main__':` block, with their trailing comments (and the comment-only
    lines that continue them)."""
    import io
    import tokenize as tokenizer  # imported here: this file runs in the script's namespace (train_bat has tokenize)
    path = namespace.get('__file__') or sys.argv[0]
    with open(path) as f:
        src = f.read()
    lines = src.splitlines()
    comments = {t.start[0]: (t.start[1], t.string.lstrip('#').strip())
                for t in tokenizer.generate_tokens(io.StringIO(src).readline) if t.type == tokenizer.COMMENT}
    stop = next((i + 1 for i, line in enumerate(lines) if 'exec(' in line and 'configurator.py' in line), len(lines) + 1)
    tree = ast.parse(src)
    nodes = tree.body + [n for node in tree.body if isinstance(node, ast.If) for n in node.body]
    out = []
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset)):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.lineno < stop):
            continue
        key = node.targets[0].id
        if key.startswith('_') or key.isupper() or type(namespace.get(key)) not in (int, float, bool, str, list, dict):
            continue
        col, text = comments.get(node.end_lineno, (None, ''))
        if col is not None and lines[node.end_lineno - 1].count(';') and node.end_col_offset < col:
            text = text if node is [n for n in nodes if n.end_lineno == node.end_lineno][-1] else ''
        ln = node.end_lineno + 1
        while text and ln in comments and comments[ln][0] == col and lines[ln - 1].lstrip().startswith('#'):
            text, ln = text + ' ' + comments[ln][1], ln + 1
        out.append((key, namespace[key], text))
    return ast.get_docstring(tree) or '', out


def _print_help(namespace):
    doc, settings = _settings(namespace)  # (the namespace's __doc__ is this file's: exec sets it)
    print(doc.strip() + '\n')
    print("settings (--key=value on the command line or `key = value` in a config file, applied in order):")
    rows = [(f"--{k}={v!r}", c) for k, v, c in settings]
    width = min(max((len(a) for a, _ in rows), default=0), 44)
    for arg, comment in rows:
        print(f"  {arg:<{width}}  {comment}".rstrip() if len(arg) <= width else f"  {arg}\n  {'':<{width}}  {comment}")


def _apply_overrides(argv, namespace):
    if '--help' in argv or '-h' in argv:
        _print_help(namespace)
        raise SystemExit(0)
    for arg in argv:
        if not arg.startswith('--'):
            if not os.path.isfile(arg):
                raise SystemExit(f"configurator: config file '{arg}' not found (arguments without '=' are config files)")
            print(f"configurator: config file {arg}")
            with open(arg) as f:
                # builtins.compile: scripts have a `compile` setting that shadows the builtin
                exec(builtins.compile(f.read(), arg, 'exec'), namespace)
            continue
        if '=' not in arg:
            raise SystemExit(f"configurator: '{arg}' must be written --key=value")
        key, raw = arg[2:].split('=', 1)
        if key not in namespace or key.startswith('_'):
            raise SystemExit(f"configurator: unknown config key '{key}' (from '{arg}')")
        default = namespace[key]
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string such as --device=cuda
        if isinstance(default, float) and type(value) is int:
            value = float(value)  # --learning_rate=1 means 1.0
        if type(value) is not type(default):
            raise SystemExit(f"configurator: key '{key}' expects {type(default).__name__} "
                             f"(default {default!r}), got {type(value).__name__} {value!r}")
        print(f"configurator: {key} = {value!r}")
        namespace[key] = value


_apply_overrides(sys.argv[1:], globals())
