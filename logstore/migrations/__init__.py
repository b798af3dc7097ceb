"""Alembic migrations of the log store, applied by :func:`logstore.migrate` (env.py, versions/)."""
