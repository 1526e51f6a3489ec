"""The recommendation core: data in, arrays out.

Plain Python on numpy, scipy and lightfm. It reads datasets (CSV directories and PostgreSQL), builds
features, trains the LightFM hybrid model, ranks the top-K posts of every user, evaluates offline and
reads and writes the model artifact. It never imports flask, celery or redis.
"""
