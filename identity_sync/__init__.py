"""Downstream sync (Auth0, role/permission resolver) and scheduled jobs.

Workers claim outbox rows written by :mod:`identity_store`; they may import
the store and httpx, never :mod:`scim_server` (SPEC §2).
"""
