"""Alembic migrations of the identity store, shipped inside the package."""
