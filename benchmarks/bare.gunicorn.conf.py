"""gunicorn settings of a WSGI app other than recsvc's: the benchmark's bare endpoint, the tests' probes.

``gunicorn -c benchmarks/bare.gunicorn.conf.py benchmarks.bare_app:app``: the service's settings and server
hooks (``gunicorn.conf.py``, run from the repository root), so both apps are served alike; its workers only
settle as a recsvc worker does (BLAS, heap, collector), since they hold no model and run no reloader.
"""

import runpy

_service = runpy.run_path("gunicorn.conf.py")
globals().update(
    {name: value for name, value in _service.items() if not name.startswith("__") and name != "worker_exit"}
)
post_worker_init = _service["gunicorn_hooks"].settle_worker
