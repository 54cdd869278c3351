"""The Auth0 emulator itself: that its contract check catches what breaks
Auth0's OpenAPI description (requests and answers), that it answers as Auth0
does (token endpoint, accounts, search, import jobs, tickets, rate limit), and
that its fault injection does what the fault tests rely on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.emulators.auth0 import MAX_IMPORT_BODY_BYTES, Auth0Emulator
from tests.emulators.openapi_contract import FORMATS, Contract, formats_used


@pytest.fixture
def http(auth0: Auth0Emulator) -> Iterator[httpx.Client]:
    """A plain HTTP client of the tenant, with a Management API token."""
    with httpx.Client(base_url=auth0.url, timeout=10) as client:
        answer = client.post("/oauth/token", json=_credentials(auth0))
        assert answer.status_code == 200
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


def _credentials(auth0: Auth0Emulator, **changes: Any) -> dict[str, Any]:
    return {
        "grant_type": "client_credentials",
        "client_id": auth0.client_id,
        "client_secret": auth0.client_secret,
        "audience": auth0.audience,
        **changes,
    }


def _create(http: httpx.Client, auth0: Auth0Emulator, **fields: Any) -> httpx.Response:
    body = {"connection": auth0.connection, "password": "correct-horse", **fields}
    return http.post("/api/v2/users", json=body)


def _import(http: httpx.Client, auth0: Auth0Emulator, users: Any, **fields: str) -> httpx.Response:
    content = users if isinstance(users, bytes) else orjson.dumps(users)
    return http.post(
        "/api/v2/jobs/users-imports",
        files={"users": ("users.json", content, "application/json")},
        data={"connection_id": auth0.connection_id, "send_completion_email": "false", **fields},
    )


# -- The contract check ----------------------------------------------------------


def test_a_request_that_breaks_the_contract_is_refused_and_recorded(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """A create with a property Auth0's schema does not allow
    (``additionalProperties: false``) is a 400 ``invalid_body`` and a
    recorded violation naming it."""
    answer = _create(http, auth0, email="ada@example.com", favourite_colour="blue")
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "invalid_body"
    assert "favourite_colour" in answer.json()["message"]
    assert auth0.users == {}
    [violation] = auth0.contract_violations
    assert violation.startswith("request: POST /api/v2/users: body:")
    assert "'favourite_colour' was unexpected" in violation
    auth0.contract_violations.clear()


@pytest.mark.parametrize(
    ("request_args", "words"),
    [
        (("GET", "/api/v2/users", {"per_page": "500"}), "per_page: 500 is greater than"),
        (("GET", "/api/v2/users", {"serach_engine": "v3"}), "'serach_engine' is not declared"),
        (("GET", "/api/v2/users-by-email", {}), "required parameter 'email' is missing"),
        (("GET", "/api/v2/jobs/job_1", {}), "does not match '^job_[A-Za-z0-9]{16}$'"),
        (("GET", "/api/v2/users", {"include_totals": "yes"}), "'yes' is not of type 'boolean'"),
    ],
    ids=["over-maximum", "undeclared", "missing-required", "path-pattern", "not-a-boolean"],
)
def test_parameters_that_break_the_contract_are_recorded(
    auth0: Auth0Emulator, http: httpx.Client, request_args: Any, words: str
) -> None:
    """Query and path parameters are checked against their schemas (the
    wire's strings read as the schema's type)."""
    method, path, params = request_args
    answer = http.request(method, path, params=params)
    assert answer.status_code == 400
    assert any(words in v for v in auth0.contract_violations), auth0.contract_violations
    auth0.contract_violations.clear()


def test_an_answer_that_breaks_the_contract_is_recorded(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """A seeded account that Auth0 could never hold (an e-mail that is none,
    an identity of an unknown provider) makes the emulator's own answer
    break the document, and that is recorded."""
    auth0_id = auth0.add_user("ada@example.com")
    auth0.users[auth0_id]["email"] = "not-an-address"
    auth0.users[auth0_id]["identities"][0]["provider"] = "myspace"
    assert http.get(f"/api/v2/users/{auth0_id}").status_code == 200
    violations = "\n".join(auth0.contract_violations)
    assert violations.startswith("response: GET /api/v2/users/auth0|")
    assert "'not-an-address' is not a 'email' at email" in violations
    assert "'myspace' is not one of" in violations
    auth0.contract_violations.clear()


def test_an_answer_of_an_undocumented_status_is_recorded() -> None:
    """A status the operation does not declare (DELETE answers 204, never 404)."""
    contract = Contract.auth0()
    [problem] = contract.check_response("DELETE", "/api/v2/users/x", 404, None, b"")
    assert "status 404 is not one of" in problem
    assert contract.check_response("DELETE", "/api/v2/users/x", 204, None, b"") == []


def test_every_format_of_the_document_is_checked() -> None:
    """The stock format checker of ``jsonschema`` knows none of Auth0's
    formats but ``email`` (and takes any string with an ``@``); every format
    the document names has a check here, and each refuses a bad value."""
    contract = Contract.auth0()
    assert formats_used(contract.document) <= set(FORMATS)
    stock = Draft202012Validator(
        {"format": "url"}, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    assert stock.is_valid("not a url")
    stock_email = Draft202012Validator(
        {"format": "email"}, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    assert stock_email.is_valid("@")
    bad = {
        "email": ["@", "ada@", "ada@localhost", "a da@example.com"],
        "url": ["not a url", "ftp://x/y", "https://"],
        "strict-uri": ["example.com/x"],
        "user-id": ["", "a b"],
        "client-id": ["a b", ""],
        "organization-id": ["123"],
    }
    good = {
        "email": ["ada@example.com"],
        "url": ["https://app.example.com/done"],
        "strict-uri": ["http://127.0.0.1:8000/x"],
        "user-id": ["auth0|01JDZ8"],
        "client-id": ["DaM8bokEXBWrTUFCiJjWn50jei6ardyX"],
        "organization-id": ["org_2eondWoxcMIpaLQc"],
    }
    for name, check in FORMATS.items():
        assert not any(check(v) for v in bad[name]), name
        assert all(check(v) for v in good[name]), name


def test_a_test_that_breaks_the_contract_fails_at_teardown(repo_root: Path, tmp_path: Path) -> None:
    """The ``auth0`` fixture fails a test whose request broke the contract,
    even when the test itself passed."""
    test_file = tmp_path / "test_breaks.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import httpx

            def test_sends_a_bad_create(auth0):
                with httpx.Client(base_url=auth0.url) as client:
                    token = client.post("/oauth/token", json={
                        "grant_type": "client_credentials", "client_id": auth0.client_id,
                        "client_secret": auth0.client_secret, "audience": auth0.audience,
                    }).json()["access_token"]
                    client.post(
                        "/api/v2/users",
                        json={"connection": auth0.connection, "emial": "ada@example.com"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
            """
        )
    )
    env = {**os.environ, "IDSTORE_TEST_REQUIRE_POSTGRES": "0"}
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"),
            *("--rootdir", str(repo_root), "-c", str(repo_root / "pyproject.toml")),
            str(test_file),
        ],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 error" in result.stdout
    assert "the Auth0 contract was broken" in result.stdout
    assert "'emial' was unexpected" in result.stdout


def test_the_emulator_imports_without_pytest(repo_root: Path) -> None:
    """The bench uses the emulator: importing it loads no pytest."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tests.emulators.auth0; print('pytest' in sys.modules)",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "False"


async def test_the_emulator_serves_inside_an_async_test() -> None:
    """``async with`` starts and stops its own emulator without blocking the loop."""
    async with Auth0Emulator() as emulator, httpx.AsyncClient(base_url=emulator.url) as client:
        answer = await client.post("/oauth/token", json=_credentials(emulator))
        assert answer.status_code == 200
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{emulator.url}/oauth/token")


# -- The token endpoint ----------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "error", "description"),
    [
        ({"client_secret": "wrong"}, 401, "access_denied", "Unauthorized"),
        ({"client_id": "someone-else"}, 401, "access_denied", "Unauthorized"),
        ({"grant_type": None}, 400, "invalid_request", "Missing required parameter: grant_type"),
        ({"grant_type": "password"}, 403, "unauthorized_client", "Grant type 'password' not"),
        ({"grant_type": "magic"}, 400, "unsupported_grant_type", "Unsupported grant type: magic"),
        ({"audience": None}, 403, "access_denied", "No audience parameter was provided"),
        ({"audience": "https://x/api/v2/"}, 403, "access_denied", "Service not enabled within"),
    ],
    ids=["secret", "client", "no-grant", "other-grant", "unknown-grant", "no-audience", "audience"],
)
def test_the_token_endpoint_refuses_as_auth0_does(
    auth0: Auth0Emulator, changes: dict[str, Any], status: int, error: str, description: str
) -> None:
    """Auth0's Authentication API errors: ``{"error", "error_description"}``."""
    body = {k: v for k, v in _credentials(auth0, **changes).items() if v is not None}
    answer = httpx.post(f"{auth0.url}/oauth/token", json=body)
    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert answer.json()["error_description"].startswith(description)
    assert auth0.tokens == {}


def test_the_token_endpoint_takes_a_form_and_answers_a_bearer_token(
    auth0: Auth0Emulator,
) -> None:
    """A form body works as JSON does; the answer has the four fields."""
    answer = httpx.post(f"{auth0.url}/oauth/token", data=_credentials(auth0))
    assert answer.status_code == 200
    document = answer.json()
    assert set(document) == {"access_token", "token_type", "expires_in", "scope"}
    assert document["token_type"] == "Bearer"
    assert document["expires_in"] == 86_400
    assert set(document["scope"].split()) >= {"create:users", "read:users", "update:users"}
    assert document["access_token"].count(".") == 2  # shaped as a JWT


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Missing authentication"),
        ("Bearer not-a-token", "Invalid token"),
        ("expired", "Expired token received for JSON Web Token validation"),
        ("short-lived", "Expired token received for JSON Web Token validation"),
    ],
)
def test_a_bad_bearer_token_is_401(
    auth0: Auth0Emulator, authorization: str | None, message: str
) -> None:
    """No token, an unknown one, one expired by the test or by its lifetime."""
    if authorization in ("expired", "short-lived"):
        auth0.token_lifetime = 0 if authorization == "short-lived" else 3600
        token = httpx.post(f"{auth0.url}/oauth/token", json=_credentials(auth0)).json()
        if authorization == "expired":
            auth0.expire_tokens()
        authorization = f"Bearer {token['access_token']}"
    headers = {"Authorization": authorization} if authorization else {}
    answer = httpx.get(f"{auth0.url}/api/v2/users/auth0|x", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["message"] == message
    assert answer.headers["x-ratelimit-limit"]


def test_a_token_without_the_scope_is_403(auth0: Auth0Emulator) -> None:
    """A token granted ``read:users`` only cannot create."""
    auth0.scopes = frozenset({"read:users"})
    token = httpx.post(f"{auth0.url}/oauth/token", json=_credentials(auth0)).json()
    answer = httpx.post(
        f"{auth0.url}/api/v2/users",
        json={"connection": auth0.connection, "email": "a@example.com", "password": "x" * 9},
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert answer.status_code == 403
    assert answer.json() == {
        "statusCode": 403,
        "error": "Forbidden",
        "message": "Insufficient scope, expected any of: create:users",
        "errorCode": "insufficient_scope",
    }


# -- Accounts ------------------------------------------------------------------


def test_a_create_with_user_id_makes_auth0_pipe_user_id(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """``user_id`` becomes ``auth0|{user_id}``; the e-mail is stored in lower
    case, ``name`` defaults to it, ``nickname`` to its local part; the
    identity names the connection."""
    answer = _create(http, auth0, email="Ada@Example.com", user_id="01ABC")
    assert answer.status_code == 201
    user = answer.json()
    assert user["user_id"] == "auth0|01ABC"
    assert user["email"] == "ada@example.com"
    assert user["name"] == "ada@example.com"
    assert user["nickname"] == "ada"
    assert user["identities"] == [
        {"connection": auth0.connection, "provider": "auth0", "user_id": "01ABC", "isSocial": False}
    ]
    assert auth0.users["auth0|01ABC"] == user
    assert auth0.created_per_email == {"ada@example.com": 1}


def test_a_create_without_user_id_makes_a_random_one(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    answer = _create(http, auth0, email="ada@example.com")
    auth0_id = answer.json()["user_id"]
    assert auth0_id.startswith("auth0|")
    assert len(auth0_id) == len("auth0|") + 24
    int(auth0_id.removeprefix("auth0|"), 16)


@pytest.mark.parametrize(
    "second",
    [{"email": "ADA@example.com"}, {"email": "other@example.com", "user_id": "01ABC"}],
    ids=["same-email-other-case", "same-user-id"],
)
def test_a_create_that_clashes_is_409(
    auth0: Auth0Emulator, http: httpx.Client, second: dict[str, Any]
) -> None:
    """Same e-mail in the connection (any case), or same id: Auth0's 409 body."""
    assert _create(http, auth0, email="ada@example.com", user_id="01ABC").status_code == 201
    answer = _create(http, auth0, **second)
    assert answer.status_code == 409
    assert answer.json() == {
        "statusCode": 409,
        "error": "Conflict",
        "message": "The user already exists.",
        "errorCode": "auth0_idp_error",
    }
    assert len(auth0.users) == 1


@pytest.mark.parametrize(
    ("fields", "message", "code"),
    [
        ({"password": None}, "Missing required property: password", "invalid_body"),
        ({"password": "short"}, "PasswordStrengthError: Password is too weak", "invalid_password"),
        ({"connection": "Nope"}, "The connection does not exist.", "inexistent_connection"),
        ({"email": None}, "Missing required property: email", "invalid_body"),
    ],
    ids=["no-password", "weak-password", "unknown-connection", "no-email"],
)
def test_a_create_auth0_refuses_is_400(
    auth0: Auth0Emulator, http: httpx.Client, fields: dict[str, Any], message: str, code: str
) -> None:
    body = {"connection": auth0.connection, "email": "a@example.com", "password": "x" * 10}
    body.update(fields)
    answer = http.post("/api/v2/users", json={k: v for k, v in body.items() if v is not None})
    assert answer.status_code == 400
    assert message in answer.json()["message"]
    assert answer.json()["errorCode"] == code
    assert auth0.users == {}


def test_unknown_ids_are_404_to_read_and_204_to_delete(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    answer = http.get("/api/v2/users/auth0%7Cnobody")
    assert answer.status_code == 404
    assert answer.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "The user does not exist.",
        "errorCode": "inexistent_user",
    }
    assert http.delete("/api/v2/users/auth0%7Cnobody").status_code == 204


def test_a_patch_merges_app_metadata_and_unverifies_a_new_email(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """``app_metadata`` keys are merged (``null`` removes one); a new e-mail
    is unverified unless the PATCH says so; a taken one is 400."""
    auth0_id = auth0.add_user("ada@example.com", email_verified=True, app_metadata={"a": 1, "b": 2})
    auth0.add_user("taken@example.com")
    answer = http.patch(
        f"/api/v2/users/{auth0_id}",
        json={"app_metadata": {"b": None, "c": 3}, "email": "New@Example.com"},
    )
    assert answer.status_code == 200
    assert answer.json()["app_metadata"] == {"a": 1, "c": 3}
    assert answer.json()["email"] == "new@example.com"
    assert answer.json()["email_verified"] is False
    taken = http.patch(f"/api/v2/users/{auth0_id}", json={"email": "taken@example.com"})
    assert taken.status_code == 400
    assert auth0.users[auth0_id]["email"] == "new@example.com"


def test_users_by_email_matches_in_any_case_across_connections(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    auth0.add_user("ada@example.com")
    auth0.add_user("ada@example.com", user_id="google-oauth2|1", connection="google-oauth2")
    auth0.add_user("bob@example.com")
    found = http.get("/api/v2/users-by-email", params={"email": "ADA@Example.com"}).json()
    assert sorted(u["identities"][0]["connection"] for u in found) == [
        auth0.connection,
        "google-oauth2",
    ]


def test_the_user_search_pages_filters_and_stops_at_1000(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """``q`` on the connection, pages with totals (or a bare array), and
    Auth0's limit: nothing past the first 1000 results."""
    for n in range(12):
        auth0.add_user(f"user{n}@example.com")
    auth0.add_user("other@example.com", connection="google-oauth2")
    q = f'identities.connection:"{auth0.connection}"'
    page = http.get(
        "/api/v2/users",
        params={
            "q": q,
            "search_engine": "v3",
            "per_page": "5",
            "page": "2",
            "include_totals": "true",
        },
    ).json()
    assert (page["start"], page["limit"], page["length"], page["total"]) == (10, 5, 2, 12)
    bare = http.get("/api/v2/users", params={"q": 'email:"user3@example.com"'}).json()
    assert [u["email"] for u in bare] == ["user3@example.com"]
    beyond = http.get("/api/v2/users", params={"per_page": "100", "page": "10"})
    assert beyond.status_code == 400
    assert beyond.json()["message"].startswith("You can only page through the first 1000")
    unknown = http.get("/api/v2/users", params={"q": "logins_count:[1 TO 5]"})
    assert unknown.status_code == 400


def test_the_user_search_takes_a_group_of_alternatives(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """``user_id:("a" OR "b")`` (Lucene's grouping, as Auth0's search v3
    takes it) finds either, with ``fields``; a group that is not a list of
    alternatives is 400 ``invalid_query_string``; ``last_login`` and
    ``logins_count`` follow the logins."""
    a = auth0.add_user("a@example.com", user_id="auth0|a")
    b = auth0.add_user("b@example.com", user_id='auth0|b"q')
    auth0.add_user("c@example.com", user_id="auth0|c")
    auth0.log_in(a)
    auth0.log_in(a)
    found = http.get(
        "/api/v2/users",
        params={
            "q": 'user_id:("auth0|a" OR "auth0|b\\"q" OR "auth0|gone")',
            "search_engine": "v3",
            "fields": "user_id,logins_count,last_login",
        },
    ).json()
    by_id = {u["user_id"]: u for u in found}
    assert sorted(by_id) == sorted([a, b])
    assert by_id[a]["logins_count"] == 2
    assert set(by_id[a]) == {"user_id", "logins_count", "last_login"}
    assert by_id[b] == {"user_id": b}
    for bad in ('user_id:("auth0|a" "auth0|c")', "user_id:()", 'user_id:("a" AND "b")'):
        answer = http.get("/api/v2/users", params={"q": bad})
        assert (answer.status_code, answer.json()["errorCode"]) == (400, "invalid_query_string")


def test_a_password_change_ticket_is_a_url_for_a_known_user(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    auth0_id = auth0.add_user("ada@example.com")
    answer = http.post("/api/v2/tickets/password-change", json={"user_id": auth0_id})
    assert answer.status_code == 201
    assert answer.json()["ticket"].startswith(f"{auth0.url}/lo/reset?ticket=")
    unknown = http.post("/api/v2/tickets/password-change", json={"user_id": "auth0|x"})
    assert unknown.status_code == 404


# -- Import jobs -----------------------------------------------------------------


def test_an_import_job_lives_pending_processing_completed(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """The job's states follow its timings; its users arrive on completion;
    its errors are the job itself before, 204 or the refused users after."""
    auth0.job_pending_seconds = 3600
    answer = _import(http, auth0, [{"email": "a@example.com", "user_id": "01A"}], upsert="false")
    assert answer.status_code == 202
    job = answer.json()
    assert job["status"] == "pending"
    assert job["connection"] == auth0.connection
    errors = http.get(f"/api/v2/jobs/{job['id']}/errors")
    assert (errors.status_code, errors.json()["status"]) == (200, "pending")
    auth0.job_pending_seconds, auth0.job_processing_seconds = 0, 3600
    assert http.get(f"/api/v2/jobs/{job['id']}").json()["status"] == "processing"
    assert auth0.users == {}
    auth0.job_processing_seconds = 0
    done = http.get(f"/api/v2/jobs/{job['id']}").json()
    assert done["status"] == "completed"
    assert done["summary"] == {"failed": 0, "updated": 0, "inserted": 1, "total": 1}
    assert "auth0|01A" in auth0.users
    assert http.get(f"/api/v2/jobs/{job['id']}/errors").status_code == 204
    assert http.get("/api/v2/jobs/job_0000000000000000").status_code == 404


def test_an_import_file_over_500_kb_is_413_and_a_third_job_429(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """Auth0's limits on imports: the body's size, two jobs at once."""
    auth0.job_pending_seconds = 3600
    users = [{"email": f"u{n}@example.com", "name": "x" * 200} for n in range(2500)]
    assert len(orjson.dumps(users)) > MAX_IMPORT_BODY_BYTES
    too_big = _import(http, auth0, users)
    assert too_big.status_code == 413
    assert _import(http, auth0, users[:1]).status_code == 202
    assert _import(http, auth0, users[1:2]).status_code == 202
    third = _import(http, auth0, users[2:3])
    assert third.status_code == 429
    assert third.json()["errorCode"] == "too_many_requests"


def test_an_import_file_that_is_no_array_is_400(auth0: Auth0Emulator, http: httpx.Client) -> None:
    assert _import(http, auth0, b"{not json").status_code == 400
    assert _import(http, auth0, {"email": "a@example.com"}).status_code == 400
    assert auth0.jobs == {}


# -- Rate limit and faults ---------------------------------------------------------


def test_every_management_answer_carries_the_rate_limit_headers(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    for answer in (
        http.get("/api/v2/users/auth0%7Cx"),
        _create(http, auth0, email="a@example.com"),
        http.get("/api/v2/users"),
    ):
        reset = int(answer.headers["x-ratelimit-reset"])
        assert int(answer.headers["x-ratelimit-limit"]) > 0
        assert int(answer.headers["x-ratelimit-remaining"]) >= 0
        assert reset >= int(time.time()) - 1


def test_past_the_rate_limit_auth0_answers_429(auth0: Auth0Emulator, http: httpx.Client) -> None:
    """A bucket of 2 that refills once in 1000 s: the third request is
    refused with Auth0's body, nothing left, and a reset in the future."""
    auth0.limit_rate(0.001, burst=2)
    first, second = http.get("/api/v2/users"), http.get("/api/v2/users")
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit"] == "2"
    third = _create(http, auth0, email="a@example.com")
    assert third.status_code == 429
    assert third.json() == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": "Global limit has been reached",
        "errorCode": "too_many_requests",
    }
    assert third.headers["x-ratelimit-remaining"] == "0"
    assert int(third.headers["x-ratelimit-reset"]) > time.time() + 100
    assert auth0.users == {}


def test_an_injected_failure_changes_nothing_unless_asked(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """``fail_next``: the create is answered 503 and not made; with
    ``apply=True`` it is made and still answered 500."""
    auth0.fail_next(1, 503)
    assert _create(http, auth0, email="a@example.com").status_code == 503
    assert auth0.users == {}
    auth0.fail_next(1, 500, apply=True)
    assert _create(http, auth0, email="a@example.com").status_code == 500
    assert auth0.user_by_email("a@example.com") is not None
    assert [s.injected for s in auth0.seen()] == [True, True]


def test_injected_429s_carry_only_what_they_were_given(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    auth0.fail_next(1, 429, reset=2_000_000_000)
    auth0.fail_next(1, 429, retry_after="12")
    auth0.fail_next(1, 429)
    with_reset, with_retry_after, bare = (http.get("/api/v2/users") for _ in range(3))
    assert with_reset.headers["x-ratelimit-reset"] == "2000000000"
    assert with_reset.headers["x-ratelimit-remaining"] == "0"
    assert "retry-after" not in with_reset.headers
    assert with_retry_after.headers["retry-after"] == "12"
    assert "x-ratelimit-reset" not in with_retry_after.headers
    assert "x-ratelimit-reset" not in bare.headers
    assert "retry-after" not in bare.headers


def test_faults_wait_for_their_operation_and_their_turn(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """``only`` picks the operation, ``after`` lets that many through first."""
    auth0.fail_next(1, 502, only="POST /api/v2/users", after=1)
    assert http.get("/api/v2/users").status_code == 200
    assert _create(http, auth0, email="a@example.com").status_code == 201
    assert http.get("/api/v2/users").status_code == 200
    assert _create(http, auth0, email="b@example.com").status_code == 502
    assert _create(http, auth0, email="b@example.com").status_code == 201


def test_a_fraction_of_5xx_is_seeded_and_applies_nothing(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """``fail_ratio(0.3)``: about 30% of 200 creates fail, the same ones for
    the same seed, and exactly the successful ones exist."""
    outcomes = []
    for attempt in range(2):
        auth0.reset()
        http.headers["Authorization"] = (
            "Bearer "
            + httpx.post(f"{auth0.url}/oauth/token", json=_credentials(auth0)).json()[
                "access_token"
            ]
        )
        auth0.fail_ratio(0.3, seed=11)
        statuses = [_create(http, auth0, email=f"u{n}@example.com").status_code for n in range(200)]
        assert set(statuses) <= {201, 500, 502, 503, 504}
        assert 40 <= sum(s != 201 for s in statuses) <= 80, attempt
        assert len(auth0.users) == statuses.count(201)
        outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]


def test_a_drop_after_commit_makes_the_account_and_cuts_the_answer(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    auth0.drop_after_commit()
    with pytest.raises(httpx.RemoteProtocolError):
        _create(http, auth0, email="a@example.com")
    assert auth0.user_by_email("a@example.com") is not None
    assert auth0.created_per_email == {"a@example.com": 1}
    assert _create(http, auth0, email="a@example.com").status_code == 409
    assert auth0.duplicates() == {}


def test_an_outage_answers_everything_with_its_status(auth0: Auth0Emulator) -> None:
    auth0.outage = 503
    assert httpx.post(f"{auth0.url}/oauth/token", json=_credentials(auth0)).status_code == 503
    assert httpx.get(f"{auth0.url}/api/v2/users").status_code == 503


def test_requests_are_recorded_with_secrets_masked(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """Method, decoded and raw path, query, headers and parsed body; the
    password and client secret are masked in the record."""
    auth0_id = _create(http, auth0, email="a@example.com", user_id="u1").json()["user_id"]
    http.get(f"/api/v2/users/{auth0_id.replace('|', '%7C')}", params={"fields": "email"})
    token, create, read = auth0.requests
    assert token.body["client_secret"] == "[secret]"
    assert create.body["password"] == "[secret]"
    assert auth0.passwords[auth0_id] == "correct-horse"
    assert (read.method, read.path, read.raw_path) == (
        "GET",
        "/api/v2/users/auth0|u1",
        "/api/v2/users/auth0%7Cu1",
    )
    assert read.query == {"fields": "email"}
    assert read.headers["authorization"].startswith("Bearer ")
    assert auth0.seen("GET /api/v2/users/{id}") == [read]
    assert auth0.seen("POST /oauth/token") == [token]


def test_users_seeded_straight_into_the_dict_are_found_by_email(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """The e-mail index notices users added to or removed from
    :attr:`users` directly, and :meth:`reindex` an e-mail changed in place."""
    auth0_id = auth0.add_user("ada@example.com")
    auth0.users["auth0|direct"] = {**auth0.users[auth0_id], "user_id": "auth0|direct"}
    auth0.users["auth0|direct"]["email"] = "direct@example.com"
    found = http.get("/api/v2/users-by-email", params={"email": "direct@example.com"}).json()
    assert [u["user_id"] for u in found] == ["auth0|direct"]
    auth0.users[auth0_id]["email"] = "renamed@example.com"
    auth0.reindex()
    found = http.get("/api/v2/users-by-email", params={"email": "renamed@example.com"}).json()
    assert [u["user_id"] for u in found] == [auth0_id]
    del auth0.users["auth0|direct"]
    assert http.get("/api/v2/users-by-email", params={"email": "direct@example.com"}).json() == []
    assert _create(http, auth0, email="direct@example.com").status_code == 201


def test_a_request_from_before_a_reset_leaves_the_next_tenant_alone(
    auth0: Auth0Emulator, http: httpx.Client
) -> None:
    """A client gave up on a slow request and the test ended (``reset``):
    when the request wakes, it neither changes the new tenant nor shows in
    its records (the next test's ``statuses`` once listed its 404)."""
    auth0.delay = 0.5
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            "/api/v2/users",
            json={"connection": auth0.connection, "password": "x-9!Long", "email": "e@example.com"},
            timeout=0.1,
        )
    auth0.reset()
    kept = auth0.add_user("kept@example.com")
    time.sleep(0.8)  # the first request wakes, after the reset
    assert auth0.requests == []
    assert sum(auth0.statuses.values()) == 0
    assert list(auth0.users) == [kept]
    assert auth0.created_per_email == {}
