"""Stand-ins for the demo, the tests and the benchmarks: never part of the provider's package.

Lives beside ``airflow_provider_kraken_s3``, not inside it, and is not in the wheel (``setup.cfg`` packages
only the provider). Importable from the repository root: pytest puts it on ``sys.path``
(``pythonpath`` in ``pyproject.toml``), the scripts and benchmarks put it there themselves, and
``tests/dag_runner.py`` passes it to its ``airflow dags test`` subprocesses through ``PYTHONPATH``.

- :mod:`.s3` — a real ``moto_server`` process on loopback (S3 over HTTP); needs the ``test`` extra.
- :mod:`.airflow_cli` — ``airflow dags test`` in this process, ``airflow db migrate``.
- :mod:`.mongo` — an in-memory MongoDB (mongomock) behind ``mongomock://`` connections, once :func:`~.mongo.install` ran.
"""
