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
"""
import ast
import builtins
import os
import sys


def _apply_overrides(argv, namespace):
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
