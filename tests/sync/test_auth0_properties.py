"""Auth0 properties for the management API's user reads
(identity_sync/auth0_properties.py, scim_server/api/auth0_properties.py)
against the Auth0 emulator: batched searches by id within their bounds, the
cache (time to live, size), failures that leave the properties out, and the
merge into user documents."""

from __future__ import annotations

from typing import Any

import pytest

from identity_store.settings import Settings
from identity_sync.auth0 import MAX_IDS_PER_SEARCH, MAX_QUERY_LENGTH, search_batches
from identity_sync.auth0_properties import Auth0Properties, PropertyCache
from identity_sync.clock import ManualClock
from scim_server.api.auth0_properties import merge_auth0_properties
from tests.emulators.auth0 import Auth0Emulator
from tests.sync.conftest import START

SEARCH = "GET /api/v2/users"


def _settings(auth0: Auth0Emulator, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "DATABASE_URL": "sqlite+aiosqlite:///unused.db",
        **auth0.settings_fields(),
        "auth0_user_properties": "last_login,logins_count",
        **overrides,
    }
    return Settings(**fields)


@pytest.fixture
async def provider(auth0: Auth0Emulator) -> Any:
    from identity_sync.auth0 import Auth0Client

    made: list[Auth0Client] = []

    def make(clock: ManualClock, **overrides: Any) -> Auth0Properties:
        settings = _settings(auth0, **overrides)
        made.append(Auth0Client(settings, clock=clock))
        return Auth0Properties(made[-1], settings, clock=clock)

    yield make
    for client in made:
        await client.aclose()


def test_searches_are_cut_by_count_and_query_length() -> None:
    """At most 50 ids a search, its query within 3,000 characters; ids that
    cannot be searched (a control character, too long) are left out."""
    short = [f"auth0|{i:024d}" for i in range(120)]
    assert [len(b) for b in search_batches(short)] == [50, 50, 20]
    long = [f"oidc|{'x' * 280}{i}" for i in range(30)]
    batches = search_batches(long)
    assert sum(len(b) for b in batches) == 30
    assert all(len(b) <= MAX_IDS_PER_SEARCH for b in batches)
    assert all(len('user_id:("' + '" OR "'.join(b) + '")') <= MAX_QUERY_LENGTH for b in batches)
    assert search_batches(["a\x00b", "x" * 301, "auth0|ok", "auth0|ok"]) == [["auth0|ok"]]


async def test_properties_are_read_in_batches_and_cached(
    auth0: Auth0Emulator, provider: Any
) -> None:
    """120 accounts: three searches; asked again within the time to live,
    none; after it, again. An account Auth0 does not have is cached as none."""
    clock = ManualClock(START)
    ids = [auth0.add_user(f"u{i}@example.com", user_id=f"auth0|u{i:03d}") for i in range(120)]
    auth0.log_in(ids[0])
    auth0.log_in(ids[0])
    properties = provider(clock, auth0_properties_cache_seconds=60)
    found = await properties.properties([*ids, "auth0|gone"])
    assert len(auth0.seen(SEARCH)) == 3
    assert found[ids[0]]["logins_count"] == 2
    assert isinstance(found[ids[0]]["last_login"], str)
    assert found[ids[1]] == {}  # never logged in: Auth0 answers no such fields
    assert found["auth0|gone"] == {}
    # Every search asked only for the properties configured.
    assert {s.query["fields"] for s in auth0.seen(SEARCH)} == {"user_id,last_login,logins_count"}
    await properties.properties([ids[5], "auth0|gone"])
    assert len(auth0.seen(SEARCH)) == 3
    clock.advance(61)
    await properties.properties([ids[5]])
    assert len(auth0.seen(SEARCH)) == 4


async def test_a_failing_auth0_leaves_the_properties_out_uncached(
    auth0: Auth0Emulator, provider: Any
) -> None:
    clock = ManualClock(START)
    auth0_id = auth0.add_user("a@example.com", user_id="auth0|a")
    properties = provider(clock)
    auth0.fail_next(1, 429, reset=clock.now().timestamp() + 30, only=SEARCH)
    assert await properties.properties([auth0_id]) == {}
    auth0.fail_next(1, 503, only=SEARCH)
    assert await properties.properties([auth0_id]) == {}
    assert await properties.properties([auth0_id]) == {auth0_id: {}}
    assert len(auth0.seen(SEARCH)) == 3


async def test_without_properties_configured_nothing_is_fetched(
    auth0: Auth0Emulator, provider: Any
) -> None:
    properties = provider(ManualClock(START), auth0_user_properties="")
    users: list[dict[str, Any]] = [{"id": "u1", "authUserId": "auth0|a"}]
    assert await merge_auth0_properties(users, properties) == [
        {"id": "u1", "authUserId": "auth0|a"}
    ]
    assert await merge_auth0_properties(users, None) == users
    assert auth0.seen(SEARCH) == []


async def test_the_merge_adds_each_users_properties(auth0: Auth0Emulator, provider: Any) -> None:
    """Under ``auth0``: the account's properties, ``{}`` for an account Auth0
    does not have, ``null`` for a user without one; one search for the page."""
    clock = ManualClock(START)
    auth0_id = auth0.add_user("a@example.com", user_id="auth0|a")
    auth0.log_in(auth0_id)
    users: list[dict[str, Any]] = [
        {"id": "u1", "authUserId": auth0_id},
        {"id": "u2", "authUserId": None},
        {"id": "u3"},
        {"id": "u4", "authUserId": "auth0|gone"},
    ]
    merged = await merge_auth0_properties(users, provider(clock))
    assert merged[0]["auth0"]["logins_count"] == 1
    assert set(merged[0]["auth0"]) == {"last_login", "logins_count"}
    assert merged[1]["auth0"] is None
    assert merged[2]["auth0"] is None
    assert merged[3]["auth0"] == {}
    assert len(auth0.seen(SEARCH)) == 1


def test_the_cache_keeps_the_most_recently_used_within_its_size() -> None:
    clock = ManualClock(START)
    cache = PropertyCache(ttl=60, size=2, clock=clock)
    cache.put("a", {"n": 1})
    cache.put("b", {"n": 2})
    assert cache.get("a") == {"n": 1}  # a is now the most recently used
    cache.put("c", {"n": 3})
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ({"n": 1}, None, {"n": 3})
    assert len(cache) == 2
    clock.advance(60)
    assert cache.get("a") is None
    off = PropertyCache(ttl=0, size=10, clock=clock)
    off.put("a", {})
    assert off.get("a") is None


@pytest.mark.parametrize(
    "value",
    ["last_login,password", "last_login;logins_count", "user_id", "app_metadata.secret"],
)
def test_only_readable_property_names_are_configured(auth0: Auth0Emulator, value: str) -> None:
    with pytest.raises(ValueError, match="not Auth0 user properties"):
        _settings(auth0, auth0_user_properties=value)
