"""Run by Python at start-up in a job started by `peftbench measure` (this folder is first on its PYTHONPATH).

Installs peftbench's Trainer import hook, then runs the environment's own sitecustomize, if it has one, as it would
have run without us.
"""

import importlib
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
try:
    from peftbench.measure import install

    install()
except Exception as exc:  # never stop the user's job: it runs unmeasured, and says so
    print(f"peftbench measure: the job runs unmeasured: {type(exc).__name__}: {exc}", file=sys.stderr)

sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
del sys.modules["sitecustomize"]
try:
    importlib.import_module("sitecustomize")
except ImportError:
    pass
