"""A WSGI app for tests of gunicorn.conf.py's hooks: answers how its worker's garbage collector is set up."""

import gc
import json


def app(environ, start_response):
    body = json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()[0]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
