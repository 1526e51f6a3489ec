"""The benchmark's baseline: a bare Flask endpoint returning a constant, run under the same gunicorn settings.

``gunicorn -c benchmarks/bare.gunicorn.conf.py benchmarks.bare_app:app`` — what the service's own work is
compared with.
"""

from flask import Flask

app = Flask(__name__)

BODY = {"status": "ok"}


@app.get("/bare")
def bare():
    return BODY
