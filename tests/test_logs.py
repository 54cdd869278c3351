"""The logs of a real server (``idstore serve``) fed hostile input carry no
credentials and none of the personal data the requests sent, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import uvicorn.logging
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from identity_store import users
from identity_store.actor import Actor
from identity_store.errors import UnavailableError
from identity_store.settings import Settings
from identity_store.store import Store
from identity_store.users import UserInput
from idstore import logs
from idstore.logs import redact, redact_target

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ACTOR = Actor(name="test")
REFUSED = (DBAPIError, UnavailableError)
"""How a refused row surfaces: unmapped (PostgreSQL's XX000), or as 503."""

# The database refuses some rows, the way it refuses real values: on
# PostgreSQL with its own message naming the value (22P02) or an internal
# error whose DETAIL names it; on SQLite with a runtime error.
_POSTGRES_REFUSAL = [
    """
    CREATE FUNCTION test_refuse_user() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.user_name LIKE 'refused.%' THEN
            PERFORM NEW.user_name::integer;
        ELSIF NEW.user_name LIKE 'crash.%' THEN
            RAISE EXCEPTION 'test trigger refused a user' USING ERRCODE = 'XX000',
                DETAIL = 'Failing row contains (' || NEW.user_name || ').';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER test_refuse_user BEFORE INSERT OR UPDATE ON users
        FOR EACH ROW EXECUTE FUNCTION test_refuse_user()
    """,
]
_POSTGRES_CLEANUP = [
    "DROP TRIGGER IF EXISTS test_refuse_user ON users",
    "DROP FUNCTION IF EXISTS test_refuse_user()",
]
_SQLITE_REFUSAL = [
    f"""
    CREATE TRIGGER test_refuse_user_on_{event} BEFORE {event} ON users
    WHEN NEW.user_name LIKE 'refused.%' OR NEW.user_name LIKE 'crash.%'
    BEGIN SELECT json('refused by a test trigger'); END
    """
    for event in ("INSERT", "UPDATE")
]
_SQLITE_CLEANUP = [
    "DROP TRIGGER IF EXISTS test_refuse_user_on_INSERT",
    "DROP TRIGGER IF EXISTS test_refuse_user_on_UPDATE",
]


async def _run_script(engine: AsyncEngine, script: list[str]) -> None:
    async with engine.begin() as connection:
        for statement in script:
            await connection.exec_driver_sql(statement)


@pytest.fixture
async def refusing_database(engine: AsyncEngine) -> AsyncIterator[None]:
    """The test database refuses users named ``refused.*`` and ``crash.*``."""
    postgres = engine.dialect.name == "postgresql"
    await _run_script(engine, _POSTGRES_CLEANUP if postgres else _SQLITE_CLEANUP)
    await _run_script(engine, _POSTGRES_REFUSAL if postgres else _SQLITE_REFUSAL)
    try:
        yield
    finally:
        await _run_script(engine, _POSTGRES_CLEANUP if postgres else _SQLITE_CLEANUP)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A running ``idstore serve`` and the file its output goes to."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def stop(self) -> str:
        """Stop the server (as Ctrl-C does) and read all it logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log.read_text(errors="replace")


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    """``idstore serve`` in a process of its own on loopback, its stdout and
    stderr in one file."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "IDSTORE_DEV_TOKEN": "false",
        "IDSTORE_LOG_LEVEL": "info",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "idstore", "serve", "--no-migrate", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{server.stop()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def _messages(error: BaseException) -> str:
    """The text of ``error`` and of every exception it was raised from."""
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


async def test_database_errors_carry_no_bound_parameters(
    store: Store, refusing_database: None
) -> None:
    """A row the database refuses raises an error that shows the statement
    but none of its values: on a user's INSERT (straight to asyncpg on
    PostgreSQL) and its UPDATE (through SQLAlchemy)."""
    with pytest.raises(REFUSED) as inserting:
        await users.create_user(
            store,
            UserInput(user_name="crash.param@example.com", columns={"family_name": "Paramwell"}),
            ACTOR,
        )
    kept = await users.create_user(store, UserInput(user_name="kept@example.com"), ACTOR)
    with pytest.raises(REFUSED) as updating:
        await users.update_user(
            store,
            kept.user.id,
            lambda current: UserInput(
                user_name="crash.param@example.com", columns={"family_name": "Paramwell"}
            ),
            ACTOR,
        )
    for caught in (inserting, updating):
        text = _messages(caught.value)
        assert "[SQL: " in text
        assert "users" in text
        assert "Paramwell" not in text, text


def _user(user_name: str, email: str, family_name: str) -> dict[str, Any]:
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Patricia", "familyName": family_name},
        "emails": [{"value": email, "type": "work", "primary": True}],
    }


async def test_logs_carry_no_credentials_or_personal_data(
    server: Server,
    refusing_database: None,
    tokens_by_scope: dict[str, str],
    backend: str,
) -> None:
    """A token in the query string (refused), a filter on an e-mail address,
    and users the database refuses: the logs show each request and each
    database error, but neither the secrets nor the names and addresses."""
    secret = tokens_by_scope["scim:write"]
    other_secret = tokens_by_scope["scim:read"]
    bearer = {"Authorization": f"Bearer {secret}"}
    # A connection per request: uvicorn closes one after a 500.
    async with httpx.AsyncClient(
        base_url=f"{server.url}/scim/v2",
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        refused = await client.get("/Users", params={"access_token": secret})
        assert refused.status_code == 401
        refused = await client.get("/Users", params={"token": other_secret, "count": "1"})
        assert refused.status_code == 401
        listed = await client.get(
            "/Users",
            headers=bearer,
            params={"filter": 'emails.value eq "pat.filter@example.com"', "count": "5"},
        )
        assert listed.status_code == 200
        for user_name, email, family_name in [
            ("refused.pat@example.com", "pat.refused@example.com", "Refusedwell"),
            ("crash.pat@example.com", "pat.crashed@example.com", "Crashwell"),
            ("nul\u0000pat@example.com", "pat.nul@example.com", "Nulwell"),
        ]:
            created = await client.post(
                "/Users", headers=bearer, json=_user(user_name, email, family_name)
            )
            if not user_name.startswith("nul"):
                assert created.status_code >= 400, created.text
    logs = await asyncio.to_thread(server.stop)

    # Each request is in the access log, and the database's refusals were logged.
    assert '"GET /scim/v2/Users?access_token=' in logs
    assert '"GET /scim/v2/Users?token=' in logs
    assert "count=1" in logs
    assert '"GET /scim/v2/Users?filter=' in logs
    assert logs.count('"POST /scim/v2/Users HTTP/1.1"') == 3
    # A refused value is logged by its class and SQLSTATE, not its message.
    if backend == "postgresql":
        assert "database refused a value: InvalidTextRepresentationError (SQLSTATE 22P02)\n" in logs
        assert "InternalServerError" in logs
    else:
        assert "database unavailable: OperationalError: malformed JSON\n" in logs

    secrets_ = [secret, other_secret, secret.split("_", 2)[2], other_secret.split("_", 2)[2]]
    personal = [
        "pat.filter@example.com",
        "refused.pat",
        "pat.refused@example.com",
        "Refusedwell",
        "crash.pat",
        "pat.crashed@example.com",
        "Crashwell",
        "pat.nul@example.com",
        "Nulwell",
        "Patricia",
    ]
    # As sent, and as a query string carries them.
    forms = {
        form for value in secrets_ + personal for form in (value, quote(value), quote_plus(value))
    }
    leaked = sorted(form for form in forms if form in logs)
    assert leaked == [], logs


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "auth failed for idst_01M8TQ92A1TAZRW2AE1RHX5M0F_sJWs5-Mzzqyv1kFW8_36lxNX",
            "auth failed for idst_01M8TQ92A1TAZRW2AE1RHX5M0F_[redacted]",
        ),
        ("got idst_not-a-real-format", "got idst_[redacted]"),
        (
            "headers: [(b'authorization', b'Bearer abc.def-ghi')]",
            "headers: [(b'authorization', b'Bearer [redacted]')]",
        ),
        ("url /x?a=1&access_token=s3cr3t&b=2", "url /x?a=1&access_token=[redacted]&b=2"),
        ("password: hunter2, next", "password: [redacted], next"),
        (
            "duplicate key value\nDETAIL:  Key (user_name)=(pat@example.com) already exists.\nnext",
            "duplicate key value\nDETAIL:  [redacted]\nnext",
        ),
        (
            "[SQL: INSERT ...]\n[parameters: ('pat@example.com', 1)]",
            "[SQL: INSERT ...]\n[parameters: [redacted]]",
        ),
        (
            'invalid input syntax for type integer: "pat@example.com"',
            "invalid input syntax for type integer: [redacted]",
        ),
        (
            "invalid input for query argument $1: 'pat@example.com' (expected int)",
            "invalid input for query argument $1: [redacted] (expected int)",
        ),
        (
            "nothing to hide in 01M8TQ92A1TAZRW2AE1RHX5M0F",
            "nothing to hide in 01M8TQ92A1TAZRW2AE1RHX5M0F",
        ),
    ],
)
def test_redact_removes_credentials_and_quoted_values(line: str, expected: str) -> None:
    """Each kind of secret or personal value a log line could carry is replaced;
    ids and the rest of the line stay."""
    assert redact(line) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/scim/v2/Users/01M8TQ", "/scim/v2/Users/01M8TQ"),
        (
            "/scim/v2/Users?startIndex=1&count=10&attributes=userName,emails",
            "/scim/v2/Users?startIndex=1&count=10&attributes=userName,emails",
        ),
        (
            "/scim/v2/Users?access_token=idst_x&TOKEN=y&other=z",
            "/scim/v2/Users?access_token=[redacted]&TOKEN=[redacted]&other=[redacted]",
        ),
        (
            "/scim/v2/Users?filter=userName+eq+%22p%5C%22at%40x.com%22+and+active+eq+true",
            "/scim/v2/Users?filter=userName%20eq%20%22[redacted]%22%20and%20active%20eq%20true",
        ),
        (
            "/scim/v2/Users?filter=userName%20eq%20%22unclosed@x.com",
            "/scim/v2/Users?filter=userName%20eq%20%22[redacted]%22",
        ),
    ],
)
def test_access_log_targets_keep_only_harmless_query_values(target: str, expected: str) -> None:
    """Paging and projection parameters stay; a filter keeps its attributes and
    operators; any other value is replaced."""
    assert redact_target(target) == expected


# -- Cheaper lines, the same lines -----------------------------------------------------------

_FRAGMENTS = [
    "idst_01M8TQ92A1TAZRW2AE1RHX5M0F_sJWs5-Mzzqyv1kFW8_36lxNX",
    "IDST_x",
    "xidst_abc",
    "Bearer abc.def",
    "BEARER abc",
    "Ba\u017fic dXNlcjpwYXNz",  # long s: IGNORECASE folds it to s
    "basic",
    "access_token=s3cr3t",
    "Refresh_Token: abc",
    "id_token=a",
    "TOKEN=b",
    "apikey=k",
    "API_KEY: k",
    "password: hunter2",
    "PASSWD=x",
    "client_secret=y",
    "Secret: z",
    "\nDETAIL:  Key (user_name)=(pat@example.com) already exists.",
    "\n  DETAIL: x",
    "detail: not at the start of a line",
    "[parameters: ('pat@example.com', 1)]",
    "[PARAMETERS: x]",
    'invalid input syntax for type integer: "pat@example.com"',
    "invalid input value for enum lifecycle: 'X'",
    "field value out of range: 99999",
    'malformed array literal: "{x"',
    "invalid input for query argument $1: 'pat@example.com' (expected int)",
    "Invalid Input syntax for type uuid: 'x'",
    "/scim/v2/Users/01M8TQ92A1TAZRW2AE1RHX5M0F",
    "GET /scim/v2/Users?count=10",
    "nothing to hide",
    "Ünïcode ẞ K",  # Kelvin sign
    " ",
    "\n",
    "=",
    ":",
    "",
]


def _random_lines(count: int) -> list[str]:
    import random

    chooser = random.Random(15)
    return [
        "".join(chooser.choice(_FRAGMENTS) for _ in range(chooser.randint(1, 4)))
        for _ in range(count)
    ]


@pytest.mark.parametrize("line", [*_FRAGMENTS, *_random_lines(3000)])
def test_redact_skips_only_lines_no_expression_would_change(line: str) -> None:
    """redact returns a line without any text its expressions need as it is,
    without running them: the same result as running them all, for every
    kind of secret in any letter case (folds included) and for plain text."""
    assert redact(line) == logs._redact_all(line)


def _access_record(
    args: Any, level: int = logging.INFO, exc_info: Any = None, stack_info: str | None = None
) -> logging.LogRecord:
    record = logging.LogRecord(
        "uvicorn.access", level, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, exc_info
    )
    record.stack_info = stack_info
    return record


def _exc_info() -> Any:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return sys.exc_info()


ACCESS_RECORDS = [
    _access_record(("127.0.0.1:54321", "GET", "/scim/v2/Users/01M8TQ", "1.1", 200)),
    _access_record(("[::1]:80", "POST", "/scim/v2/Users", "1.0", 201)),
    _access_record(("127.0.0.1:1", "PATCH", "/scim/v2/Users/x", "2", 204)),
    _access_record(
        ("127.0.0.1:1", "GET", "/scim/v2/Users?filter=x%20eq%20%22[redacted]%22", "1.1", 304)
    ),
    _access_record(("127.0.0.1:1", "DELETE", "/scim/v2/Users/x", "1.1", 404)),
    _access_record(("127.0.0.1:1", "PUT", "/scim/v2/Users/x", "1.1", 412)),
    _access_record(("127.0.0.1:1", "GET", "/", "1.1", 500)),
    _access_record(("127.0.0.1:1", "GET", "/", "1.1", 599)),  # no phrase
    _access_record(("127.0.0.1:1", "GET", "/", "1.1", 101)),
    _access_record(("127.0.0.1:1", "GET", "/%C3%A9", "1.1", 200)),
    _access_record(("127.0.0.1:1", "GET", "/", "1.1", True)),
    _access_record((None, "GET", "/", "1.1", 200)),
    _access_record(("127.0.0.1:1", "GET", "/", "1.1", 200), level=logging.WARNING),
    _access_record(("127.0.0.1:1", "GET", "/", "1.1", 200), level=logging.CRITICAL),
    _access_record(("127.0.0.1:1", "GET", "/", "1.1", 200), level=5),  # uvicorn's TRACE
    _access_record(("127.0.0.1:1", "GET", "/", "1.1", 500), exc_info=_exc_info()),
    _access_record(
        ("127.0.0.1:1", "GET", "/", "1.1", 200), stack_info="Stack (most recent call last)"
    ),
]


@pytest.mark.parametrize("use_colors", [False, True])
@pytest.mark.parametrize("index", range(len(ACCESS_RECORDS)))
def test_access_formatter_writes_uvicorns_line(index: int, use_colors: bool) -> None:
    """The server's access formatter writes what uvicorn's AccessFormatter
    writes from the same record, with and without colours, for every status
    (one without a phrase included), level, exception and stack."""
    record = ACCESS_RECORDS[index]
    ours = logs.AccessFormatter(fmt=logs.ACCESS_FORMAT, use_colors=use_colors)
    uvicorns = uvicorn.logging.AccessFormatter(fmt=logs.ACCESS_FORMAT, use_colors=use_colors)
    assert _formatted(ours, record) == _formatted(uvicorns, record)


def _formatted(formatter: logging.Formatter, record: logging.LogRecord) -> tuple[Any, ...]:
    record = copy.copy(record)
    try:
        line = formatter.format(record)
    except Exception as exc:  # compared, not hidden
        return ("failed", type(exc), str(exc))
    return ("written", line, record.message)


@pytest.mark.parametrize(
    "args",
    [
        ("127.0.0.1:1", "GET", "/"),
        ("127.0.0.1:1", "GET", "/", "1.1", "200"),
        ("127.0.0.1:1", "GET", "/", "1.1", 200, "extra"),
        ("127.0.0.1:1", "GET", "/", "1.1", None),
    ],
)
def test_access_formatter_fails_on_records_uvicorns_refuses(args: Any) -> None:
    """A record uvicorn's formatter cannot write fails the same way."""
    record = _access_record(args)
    ours = logs.AccessFormatter(fmt=logs.ACCESS_FORMAT, use_colors=False)
    uvicorns = uvicorn.logging.AccessFormatter(fmt=logs.ACCESS_FORMAT, use_colors=False)
    theirs = _formatted(uvicorns, record)
    assert theirs[0] == "failed"
    assert _formatted(ours, record) == theirs


def test_the_server_logs_access_lines_with_its_formatter() -> None:
    """idstore serve's configuration writes access lines with it."""
    assert logs.log_config("info")["formatters"]["access"] == {
        "()": "idstore.logs.AccessFormatter",
        "fmt": logs.ACCESS_FORMAT,
    }
