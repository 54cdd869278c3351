"""Entry point for ``uvicorn --factory idstore.asgi:app_factory``."""

from starlette.applications import Starlette

from identity_store.settings import Settings
from scim_server.app import create_app


def app_factory() -> Starlette:
    """Build the application from the environment (read now, not at import)."""
    return create_app(Settings())
