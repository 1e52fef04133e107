"""The pure core: every decision compoundry makes, as functions and small classes over plain data.

Nothing here does I/O, reads a clock or draws a random number on its own:
callers pass ``now``, clocks and random sources in. The core imports only the
standard library, numpy and scipy (checked by the import contract in
``pyproject.toml`` and ``tests/unit/test_architecture.py``), so its unit tests
run without MLflow, Prefect, BentoML or a database.
"""
