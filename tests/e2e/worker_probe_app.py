"""A WSGI app for tests of gunicorn.conf.py's hooks: answers how its worker was settled (collector, BLAS)."""

import gc
import json

from threadpoolctl import threadpool_info


def app(environ, start_response):
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    body = json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()[0], "blas": blas}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
