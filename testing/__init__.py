"""Test support shared by the tests and the benchmarks: real processes, polling, publishing, factories.

Why a top-level package and not ``tests/`` (as Redash's ``tests/__init__.py``): the benchmarks start the
same gunicorn, redis-server and Celery processes and publish models the same way as the tests, and they
must never import ``tests`` (an import-linter contract). So the code both need lives here, once; the pytest
fixtures stay in ``tests/conftest.py`` files, which import from this package. Nothing in the service imports
it, and the Docker image leaves it out (``.dockerignore``).

- :mod:`testing.environment`: where the tests' PostgreSQL database and Redis databases are (``TEST_*``).
- :mod:`testing.polling`: waiting for a condition, bounded.
- :mod:`testing.processes`: gunicorn, redis-server and ``celery -A tasks`` processes on free ports, and
  what /proc says about them.
- :mod:`testing.postgres`: a private PostgreSQL cluster that asks for passwords.
- :mod:`testing.factories`: small deterministic models and datasets built in memory.
- :mod:`testing.service`: the service's own paths driven from outside (publish a model, train, the demo).
"""
