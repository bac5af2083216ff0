"""Execution engines for the event → account-stats stage of ``scan``.

DuckDB (embedded, default) is :func:`distillguard.features.stats.account_stats`; Spark is
:func:`distillguard.engine.spark.spark_account_stats` (``scan --engine spark``), which gives the same
table. Importing this package does not import PySpark.
"""
