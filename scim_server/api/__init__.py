"""The ``/api/v1`` JSON API (FastAPI): roles, bindings, role assignments,
authorization checks, Rönd's endpoints (docs/authorization.md)."""

from .application import create_api, mount, routes

__all__ = ["create_api", "mount", "routes"]
