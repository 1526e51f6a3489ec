"""A WSGI app for tests of gunicorn.conf.py's hooks: answers how many objects the worker's collector froze."""

import gc


def app(environ, start_response):
    body = str(gc.get_freeze_count()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
