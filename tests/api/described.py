"""Bodies checked against the OpenAPI description the API serves: the
answers schemathesis cannot reach (a 200 needs ids it does not know) are
held to their schema here."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema

from identity_store.settings import Settings
from scim_server.api import create_api


@cache
def _components() -> dict[str, Any]:
    components: dict[str, Any] = create_api(Settings()).openapi()["components"]
    return components


def assert_described(body: Any, schema_name: str) -> None:
    """``body`` conforms to ``#/components/schemas/<schema_name>`` (JSON Schema 2020-12)."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    jsonschema.Draft202012Validator(schema).validate(body)
