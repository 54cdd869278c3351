"""``/Bulk`` (RFC 7644 §3.7).

Each operation is dispatched as a sub-request through this same application,
so it goes through exactly the handlers, validation, authorisation and
transactions of a single request; ``bulkId:`` references are replaced by the
ids that earlier operations produced. Operations whose references are not
resolved yet are retried after the others (the RFC lets a server reorder),
and an unresolvable reference fails that operation with 409.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Scope

from .errors import ScimError, error_body
from .middleware import REQUEST_ID_HEADER
from .request import authorize, read_json
from .responses import ScimResponse

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PATH = re.compile(r"^/(Users|Groups)(?:/([^/?#]+))?$", re.IGNORECASE)
REFERENCE = re.compile(r"^bulkId:(.+)$")


class _Unresolved(Exception):
    def __init__(self, bulk_id: str) -> None:
        super().__init__(bulk_id)
        self.bulk_id = bulk_id


def _resolve(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with every ``"bulkId:x"`` string replaced by the id x produced."""
    if isinstance(value, str):
        match = REFERENCE.match(value)
        if match is None:
            return value
        if match.group(1) not in ids:
            raise _Unresolved(match.group(1))
        return ids[match.group(1)]
    if isinstance(value, list):
        return [_resolve(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: _resolve(item, ids) for key, item in value.items()}
    return value


async def _dispatch(
    request: Request, method: str, path: str, body: Any, version: str | None
) -> tuple[int, dict[str, str], Any]:
    """Run one operation through the ASGI app; its status, headers and body."""
    headers = [(b"content-type", b"application/scim+json")]
    if auth := request.headers.get("authorization"):
        headers.append((b"authorization", auth.encode()))
    # The operation is audited under the Bulk request's id (the caller's
    # X-Request-Id, or the one RequestIdMiddleware gave it), not a new one.
    if request_id := request.scope.get("state", {}).get("request_id"):
        headers.append((REQUEST_ID_HEADER, str(request_id).encode()))
    if version:
        headers.append((b"if-match", version.encode()))
    payload = json.dumps(body).encode() if body is not None else b""
    headers.append((b"content-length", str(len(payload)).encode()))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "server": request.scope.get("server"),
        "client": request.scope.get("client"),
        "root_path": "",
        "path": f"/scim/v2{path}",
        "raw_path": f"/scim/v2{path}".encode(),
        "query_string": b"",
        "headers": headers,
        "state": dict(request.scope.get("state", {})),
        "app": request.app,
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    status = 500
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update(
                {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            )
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await request.app(scope, receive, send)
    raw = b"".join(chunks)
    return status, response_headers, json.loads(raw) if raw else None


async def bulk(request: Request) -> Response:
    call = await authorize(request, "scim:write")
    settings = call.state.settings
    # Each operation's data is checked for NUL characters by its own
    # handler, so that it fails alone with its 400 (RFC 7644 §3.7.3).
    body = await read_json(request, settings, nul_allowed=True)
    if BULK_REQUEST not in (body.get("schemas") or []):
        raise ScimError(400, f"a bulk request needs the schema {BULK_REQUEST}", "invalidSyntax")
    operations = body.get("Operations")
    if not isinstance(operations, list):
        raise ScimError(400, "Operations must be a list", "invalidSyntax")
    if len(operations) > settings.bulk_max_operations:
        raise ScimError(
            413,
            f"{len(operations)} operations exceed maxOperations ({settings.bulk_max_operations})",
            "tooLarge",
        )
    fail_on_errors = body.get("failOnErrors")
    if fail_on_errors is not None and (
        not isinstance(fail_on_errors, int)
        or isinstance(fail_on_errors, bool)
        or fail_on_errors < 1
    ):
        raise ScimError(400, "failOnErrors must be a positive integer", "invalidValue")

    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise ScimError(400, f"operation {index} is not an object", "invalidSyntax")
        method = str(operation.get("method", "")).upper()
        if method not in METHODS:
            raise ScimError(
                400, f"operation {index}: method must be one of {sorted(METHODS)}", "invalidSyntax"
            )
        if method == "POST" and not operation.get("bulkId"):
            raise ScimError(400, f"operation {index}: POST needs a bulkId", "invalidSyntax")
        if not isinstance(operation.get("path"), str):
            raise ScimError(400, f"operation {index} needs a path", "invalidSyntax")
    _refuse_duplicate_bulk_ids(operations)

    ids: dict[str, str] = {}
    results: dict[int, dict[str, Any]] = {}
    errors = 0
    pending = list(range(len(operations)))
    while pending and not (fail_on_errors and errors >= fail_on_errors):
        deferred: list[int] = []
        for index in pending:
            if fail_on_errors and errors >= fail_on_errors:
                break
            operation = operations[index]
            try:
                result = await _run(request, operation, ids)
            except _Unresolved:
                deferred.append(index)
                continue
            results[index] = result
            if int(result["status"]) >= 400:
                errors += 1
        if len(deferred) == len(pending):
            for index in deferred:
                results[index] = _failure(
                    operations[index],
                    409,
                    "a bulkId reference could not be resolved",
                    "invalidValue",
                )
                errors += 1
            break
        pending = deferred

    response_operations = [results[i] for i in sorted(results)]
    return ScimResponse({"schemas": [BULK_RESPONSE], "Operations": response_operations})


def _refuse_duplicate_bulk_ids(operations: list[dict[str, Any]]) -> None:
    """A ``bulkId`` names one operation of the request (RFC 7644 §3.7), so two
    that share one are refused before any operation runs."""
    seen: set[str] = set()
    for index, operation in enumerate(operations):
        bulk_id = operation.get("bulkId")
        if bulk_id is None:
            continue
        if str(bulk_id) in seen:
            raise ScimError(
                400, f"operation {index}: bulkId {str(bulk_id)!r} is used twice", "invalidValue"
            )
        seen.add(str(bulk_id))


def _failure(
    operation: dict[str, Any], status: int, detail: str, scim_type: str | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "method": str(operation.get("method", "")).upper(),
        "status": str(status),
        "response": error_body(status, detail, scim_type),
    }
    if operation.get("bulkId"):
        result["bulkId"] = operation["bulkId"]
    return result


async def _run(request: Request, operation: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    method = str(operation["method"]).upper()
    path = "/".join(_resolve(part, ids) for part in str(operation["path"]).split("/"))
    match = PATH.match(path)
    if match is None or (method == "POST") == bool(match.group(2)):
        return _failure(operation, 400, f"invalid path {path!r} for {method}", "invalidPath")
    data = _resolve(operation.get("data"), ids) if method != "DELETE" else None
    if method != "DELETE" and not isinstance(data, dict):
        return _failure(operation, 400, "data must be an object", "invalidSyntax")
    status, headers, body = await _dispatch(request, method, path, data, operation.get("version"))
    result: dict[str, Any] = {"method": method, "status": str(status)}
    if operation.get("bulkId"):
        result["bulkId"] = operation["bulkId"]
    if "location" in headers:
        result["location"] = headers["location"]
    if "etag" in headers:
        result["version"] = headers["etag"]
    if status >= 400:
        result["response"] = body
    elif method == "POST" and isinstance(body, dict) and "id" in body:
        ids[str(operation["bulkId"])] = str(body["id"])
    return result
