"""Alembic revision scripts (date-prefixed)."""
