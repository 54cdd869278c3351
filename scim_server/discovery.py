"""Discovery endpoints (RFC 7644 §4): ``/ServiceProviderConfig``,
``/ResourceTypes`` and ``/Schemas``, generated from the models that validate
requests (scim2-models' :class:`~scim2_models.ScimProvider`)."""

from __future__ import annotations

from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    ETag,
    Filter,
    Meta,
    Pagination,
    Patch,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
)
from starlette.requests import Request
from starlette.responses import Response

from identity_store.settings import Settings

from .errors import ScimError
from .listing import LIST_RESPONSE_SCHEMA
from .request import base_url
from .responses import ScimResponse
from .schemas import PRODUCT_USER_SCHEMA, build_provider
from .state import AppState, app_state

DOCS = "https://github.com/idstore/idstore/blob/main/docs/scim.md"


def service_provider_config(settings: Settings, base: str) -> ServiceProviderConfig:
    """What this server supports, with the limits it enforces."""
    return ServiceProviderConfig(
        documentation_uri=DOCS,
        patch=Patch(supported=True),
        bulk=Bulk(
            supported=True,
            max_operations=settings.bulk_max_operations,
            max_payload_size=settings.max_payload_size,
        ),
        filter=Filter(supported=True, max_results=settings.max_page_size),
        change_password=ChangePassword(supported=True),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        pagination=Pagination(
            cursor=True,
            index=True,
            default_pagination_method="index",
            default_page_size=settings.default_page_size,
            max_page_size=settings.max_page_size,
        ),
        authentication_schemes=[
            AuthenticationScheme(
                type="oauthbearertoken",
                name="OAuth Bearer Token",
                description="Authentication with a bearer token issued by 'idstore token create'",
                spec_uri="https://www.rfc-editor.org/rfc/rfc6750",
                primary=True,
            )
        ],
        meta=Meta(resource_type="ServiceProviderConfig", location=f"{base}/ServiceProviderConfig"),
    )


class _Public:
    """Discovery needs no token: it describes the protocol, not the data
    (RFC 7644 §4 leaves authentication of these endpoints to the provider)."""

    def __init__(self, request: Request) -> None:
        self.state: AppState = app_state(request)
        self.base_url = base_url(request, self.state)


def _public(request: Request) -> _Public:
    return _Public(request)


def _provider(request: Request) -> ScimProvider:
    provider: ScimProvider = request.app.state.scim_provider
    return provider


def _dump(model: Any) -> dict[str, Any]:
    result: dict[str, Any] = model.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    return result


def _list(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": 1,
        "Resources": resources,
    }


async def config(request: Request) -> Response:
    call = _public(request)
    return ScimResponse(_dump(service_provider_config(call.state.settings, call.base_url)))


FREE_FORM_ATTRIBUTES = {(PRODUCT_USER_SCHEMA, "customData")}
"""Attributes holding an arbitrary JSON object. scim2-models describes a
``dict`` field as a ``string``; SCIM has no JSON-object type, so they are
announced as ``complex`` with no declared sub-attributes, which is what they
accept."""


def _describe_free_form(doc: dict[str, Any]) -> None:
    for attribute in doc.get("attributes", []):
        if (doc["id"], attribute["name"]) in FREE_FORM_ATTRIBUTES:
            attribute["type"] = "complex"
            attribute["subAttributes"] = []
            attribute.pop("caseExact", None)


def _schema_docs(request: Request, base: str) -> list[dict[str, Any]]:
    docs = []
    for schema in _provider(request).schemas:
        doc = _dump(schema)
        _describe_free_form(doc)
        doc["meta"] = {"resourceType": "Schema", "location": f"{base}/Schemas/{schema.id}"}
        docs.append(doc)
    return docs


def _resource_type_docs(request: Request, base: str) -> list[dict[str, Any]]:
    docs = []
    for resource_type in _provider(request).resource_types:
        doc = _dump(resource_type)
        doc["meta"] = {
            "resourceType": "ResourceType",
            "location": f"{base}/ResourceTypes/{resource_type.id}",
        }
        docs.append(doc)
    return docs


async def schemas(request: Request) -> Response:
    call = _public(request)
    return ScimResponse(_list(_schema_docs(request, call.base_url)))


async def schema(request: Request) -> Response:
    call = _public(request)
    wanted = str(request.path_params["id"]).lower()
    for doc in _schema_docs(request, call.base_url):
        if str(doc["id"]).lower() == wanted:
            return ScimResponse(doc)
    raise ScimError(404, f"no schema {request.path_params['id']!r}")


async def resource_types(request: Request) -> Response:
    call = _public(request)
    return ScimResponse(_list(_resource_type_docs(request, call.base_url)))


async def resource_type(request: Request) -> Response:
    call = _public(request)
    wanted = str(request.path_params["id"]).lower()
    for doc in _resource_type_docs(request, base_url(request, call.state)):
        if str(doc["id"]).lower() == wanted or str(doc["name"]).lower() == wanted:
            return ScimResponse(doc)
    raise ScimError(404, f"no resource type {request.path_params['id']!r}")


def provider() -> ScimProvider:
    return build_provider()
