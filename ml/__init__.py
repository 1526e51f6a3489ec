"""The recommendation core: data in, arrays out.

Plain Python on numpy, scipy and lightfm. It reads datasets (CSV directories and PostgreSQL), builds
features, trains the LightFM hybrid model, ranks the top-K posts of every user, evaluates offline and
reads and writes the model artifact. It owns the settings it needs (``ml.settings``), which
``common.config`` composes into the service's. It is the bottom layer: it imports none of this
repository's other packages, nor flask, celery or redis (import-linter contracts in pyproject.toml,
checked by ``make lint``).
"""
