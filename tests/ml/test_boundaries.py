"""``ml`` is plain Python on numpy, scipy and lightfm: it never imports flask, celery or redis.

Checked in a fresh interpreter that imports every module of the package, so an import pulled in
indirectly (through another module) is caught too, not only the ones written in ``ml``'s own files.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import ml

FORBIDDEN = ("flask", "celery", "redis", "kombu", "app", "tasks")

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def test_ml_imports_no_web_queue_or_cache_library():
    modules = ["ml"] + [f"ml.{info.name}" for info in pkgutil.iter_modules(ml.__path__)]
    assert "ml.model" in modules and "ml.training" in modules
    done = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    offending = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert not offending, f"importing ml loads {offending}"
