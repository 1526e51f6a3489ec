"""PostgreSQL: the shipped schema, a bulk loader for dataset directories, and the training-data reader.

- :mod:`ml.db.connection`: :func:`~ml.db.connection.connect` (failures said in one line, naming
  ``DATABASE_URL``), :func:`~ml.db.connection.create_database`.
- :mod:`ml.db.schema`: the shipped tables (``schema.sql``), :func:`~ml.db.schema.create_schema`,
  :func:`~ml.db.schema.count_rows`.
- :mod:`ml.db.load`: :func:`~ml.db.load.load_dataset_dir`, all or nothing (demo data, tests, docker init).
- :mod:`ml.db.read`: :func:`~ml.db.read.read_dataset`, the five configurable queries the service trains on.
- ``python -m ml.db init|load|count`` (:mod:`ml.db.__main__`).
"""
