"""Discovery documents describe what the server does (RFC 7644 §4)."""

from __future__ import annotations

import httpx

from .helpers import ENTERPRISE, PRODUCT, USER_SCHEMA


async def test_service_provider_config_states_the_enforced_limits(
    scim: httpx.AsyncClient,
) -> None:
    body = (await scim.get("/ServiceProviderConfig")).json()
    assert body["patch"] == {"supported": True}
    assert body["bulk"] == {"supported": True, "maxOperations": 1000, "maxPayloadSize": 1048576}
    assert body["filter"] == {"supported": True, "maxResults": 1000}
    assert body["etag"] == {"supported": True}
    assert body["sort"] == {"supported": True}
    assert body["pagination"]["cursor"] is True
    assert body["authenticationSchemes"][0]["type"] == "oauthbearertoken"


async def test_resource_types_and_schemas(scim: httpx.AsyncClient) -> None:
    types = (await scim.get("/ResourceTypes")).json()
    assert {r["id"] for r in types["Resources"]} == {"User", "Group"}
    user_type = (await scim.get("/ResourceTypes/User")).json()
    assert {e["schema"] for e in user_type["schemaExtensions"]} == {ENTERPRISE, PRODUCT}
    schemas = (await scim.get("/Schemas")).json()
    ids = {s["id"] for s in schemas["Resources"]}
    assert {USER_SCHEMA, ENTERPRISE, PRODUCT, "urn:ietf:params:scim:schemas:core:2.0:Group"} <= ids
    product = (await scim.get(f"/Schemas/{PRODUCT}")).json()
    lifecycle = next(a for a in product["attributes"] if a["name"] == "lifecycle")
    assert lifecycle["mutability"] == "readOnly"
    assert (await scim.get("/Schemas/urn:nope")).status_code == 404
