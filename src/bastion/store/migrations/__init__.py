"""Alembic migrations of the store, run programmatically by :func:`bastion.store.upgrade`."""
