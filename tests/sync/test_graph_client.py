"""The Microsoft Graph client against the Graph emulator on loopback: the
token, the answers that mean something (a user, 404), throttling and
outages (waited out on a :class:`ManualClock`, never slept), pacing, and
every limit on what Graph may answer."""

from __future__ import annotations

import asyncio
import gzip
import random
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from identity_store.settings import Settings
from identity_sync.clock import ManualClock
from identity_sync.graph import (
    BACKOFF_CAP_SECONDS,
    MAX_ATTEMPTS,
    MAX_BODY_BYTES,
    MAX_RETRY_AFTER_SECONDS,
    PACER_BURST,
    GraphClient,
    GraphUnavailable,
    LookupRefused,
    Pacer,
    plausible_user_key,
)
from tests.emulators.graph import GraphEmulator, Raw

SAM = "onPremisesSamAccountName"
UPN = "userPrincipalName"


def _settings(graph: GraphEmulator, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        **graph.settings_fields(),
        "graph_requests_per_second": 1000.0,
        **overrides,
    }
    return Settings(**fields)


def _client(graph: GraphEmulator, clock: ManualClock, **overrides: Any) -> GraphClient:
    return GraphClient(_settings(graph, **overrides), clock, rng=random.Random(7))


def _statuses(graph: GraphEmulator) -> list[int]:
    return [seen.status for seen in graph.seen()]


# -- The token -----------------------------------------------------------------


async def test_one_token_serves_every_look_up_until_it_nears_expiry(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """The token is fetched once for many concurrent look-ups, and again only
    when less than five minutes of its hour remain."""
    ada = graph.add_user(**{SAM: "ada", UPN: "ada@contoso.com"})
    async with _client(graph, clock) as client:
        found = await asyncio.gather(*(client.get_user(ada, [SAM]) for _ in range(10)))
        assert all(user is not None and user.values == {SAM: "ada"} for user in found)
        assert client.token_requests == 1
        clock.advance(3599 - 300 - 1)
        await client.get_user(ada, [SAM])
        assert client.token_requests == 1
        clock.advance(2)
        await client.get_user(ada, [SAM])
        assert client.token_requests == 2
    form_posts = graph.seen("/oauth2/v2.0/token")
    assert [seen.status for seen in form_posts] == [200, 200]


async def test_a_token_graph_refuses_is_renewed_once(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """A 401 (the token was revoked or expired early) fetches a new token and
    sends the request again, once."""
    ada = graph.add_user(**{SAM: "ada"})
    async with _client(graph, clock) as client:
        await client.get_user(ada, [SAM])
        graph.expire_tokens()
        user = await client.get_user(ada, [SAM])
        assert user is not None
        assert user.values == {SAM: "ada"}
        assert client.token_requests == 2
    assert _statuses(graph) == [200, 401, 200]


async def test_a_fresh_token_refused_again_is_an_outage(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """When Graph refuses the renewed token too, retrying cannot help."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.tokens_valid = False
    async with _client(graph, clock) as client:
        with pytest.raises(GraphUnavailable, match=r"refused a fresh token.*InvalidAuthentication"):
            await client.get_user(ada, [SAM])
    assert _statuses(graph) == [401, 401]


async def test_a_wrong_secret_stops_before_any_look_up(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """The identity platform's ``invalid_client`` (AADSTS7000215) is an outage
    of the whole job, named in its message; no user is asked for."""
    ada = graph.add_user(**{SAM: "ada"})
    async with _client(graph, clock, graph_client_secret="not-the-secret") as client:
        with pytest.raises(GraphUnavailable, match="invalid_client: AADSTS7000215"):
            await client.get_user(ada, [SAM])
    assert graph.seen() == []
    assert [s.status for s in graph.seen("/oauth2/v2.0/token")] == [400]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Raw(200, b"<html>hello</html>", "text/html"), "not JSON"),
        (Raw(200, b'{"token_type": "Bearer", "expires_in": 3599}'), "no usable access_token"),
        (Raw(200, b'{"access_token": "abc", "expires_in": -5}'), "no usable expires_in"),
        (Raw(200, b'{"access_token": "a\\u0000b", "expires_in": 3599}'), "access_token"),
        (Raw(200, b"[1, 2]"), "not a JSON object"),
        (Raw(200, b" " * (MAX_BODY_BYTES + 1)), "unusable"),
    ],
)
async def test_a_token_answer_that_cannot_be_used_is_an_outage(
    graph: GraphEmulator, clock: ManualClock, answer: Raw, problem: str
) -> None:
    """Whatever the token endpoint answers, only a JSON object with a plain
    ``access_token`` and a positive ``expires_in`` is taken."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.token_raw = answer
    async with _client(graph, clock) as client:
        with pytest.raises(GraphUnavailable, match=problem):
            await client.get_user(ada, [SAM])
    assert graph.seen() == []


# -- Answers -------------------------------------------------------------------


async def test_a_user_comes_back_with_the_selected_properties_only(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """``$select`` names exactly the properties asked for; a property that is
    unset in the directory is empty, not refused."""
    ada = graph.add_user(**{SAM: "ada", UPN: "ada@contoso.com", "employeeId": None})
    async with _client(graph, clock) as client:
        user = await client.get_user(ada, [SAM, "employeeId"])
    assert user is not None
    assert (user.values, user.refused) == ({SAM: "ada"}, {})
    assert graph.seen()[0].query == {"$select": f"{SAM},employeeId"}


async def test_a_user_is_found_by_principal_name_too(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """The key may be a UPN (a guest's ``#EXT#`` one included), sent quoted."""
    graph.add_user(**{SAM: "ada", UPN: "ada_fabrikam.com#EXT#@contoso.onmicrosoft.com"})
    async with _client(graph, clock) as client:
        user = await client.get_user("ada_fabrikam.com#EXT#@contoso.onmicrosoft.com", [SAM])
    assert user is not None
    assert user.values == {SAM: "ada"}


async def test_an_unknown_user_is_none_not_an_error(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """404 ``Request_ResourceNotFound`` is an answer: not in the directory."""
    async with _client(graph, clock) as client:
        assert await client.get_user("9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11", [SAM]) is None
    assert _statuses(graph) == [404]


async def test_a_request_graph_refuses_is_refused_for_that_user_only(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """A 400 (a property Graph does not know) concerns this look-up; Graph is
    not down."""
    ada = graph.add_user(**{SAM: "ada"})
    async with _client(graph, clock) as client:
        with pytest.raises(LookupRefused, match="400 Request_BadRequest: Could not find"):
            await client.get_user(ada, ["noSuchProperty"])
        assert await client.get_user(ada, [SAM]) is not None


async def test_missing_permissions_are_an_outage(graph: GraphEmulator, clock: ManualClock) -> None:
    """403 applies to every user alike: the run stops and says what is missing."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.raw[ada] = Raw(403, b'{"error": {"code": "Authorization_RequestDenied"}}')
    async with _client(graph, clock) as client:
        with pytest.raises(GraphUnavailable, match=r"403 Authorization_RequestDenied.*User\.Read"):
            await client.get_user(ada, [SAM])


# -- Throttling and outages ----------------------------------------------------


async def test_a_429_waits_the_retry_after_graph_names(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """429 ``TooManyRequests`` with ``Retry-After: 7``: the client waits 7
    seconds on its clock, then asks again."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.fail_next(1, 429, retry_after="7")
    async with _client(graph, clock) as client:
        user = await client.get_user(ada, [SAM])
    assert user is not None
    assert user.values == {SAM: "ada"}
    assert _statuses(graph) == [429, 200]
    assert clock.sleeps == [pytest.approx(7.0)]


class SteppedClock:
    """A clock whose sleepers wait until the test moves time past their
    deadline (a :class:`ManualClock` moves time for everyone at each sleep,
    which hides who waited)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self.sleepers: list[tuple[datetime, asyncio.Task[Any] | None, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()
        self.sleepers.append(
            (self._now + timedelta(seconds=seconds), asyncio.current_task(), woken)
        )
        await woken

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        for deadline, _, woken in list(self.sleepers):
            if deadline <= self._now:
                self.sleepers.remove((deadline, _, woken))
                woken.set_result(None)


async def _until(condition: Any, deadline: float = 10.0) -> None:
    """Let the loop (and the emulator) work until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while not condition():
        assert loop.time() < give_up, "the condition never held"
        await asyncio.sleep(0.001)


async def test_a_429_pauses_every_concurrent_look_up(graph: GraphEmulator) -> None:
    """Graph's throttling is per application: after one 429, a look-up that
    was never refused waits out the ``Retry-After`` too, before it is sent."""
    first, second = (graph.add_user(**{SAM: f"u{n}"}) for n in range(2))
    graph.fail_next(1, 429, retry_after="30")
    clock = SteppedClock(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    settings = _settings(graph, graph_concurrency=1)
    async with GraphClient(settings, clock, rng=random.Random(7)) as client:
        # One request at a time: the first is sent (and refused), the other queues.
        told = asyncio.create_task(client.get_user(first, [SAM]))
        other = asyncio.create_task(client.get_user(second, [SAM]))
        await _until(lambda: len(clock.sleepers) == 1)
        assert clock.sleepers[0][1] is other  # it waits the pause, unasked
        assert clock.sleepers[0][0] == clock.now() + timedelta(seconds=30)
        assert len(graph.seen()) == 1
        clock.advance(30)
        assert all(user is not None for user in await asyncio.gather(told, other))
    assert _statuses(graph) == [429, 200, 200]


async def test_a_huge_retry_after_is_capped(graph: GraphEmulator, clock: ManualClock) -> None:
    """A ``Retry-After`` of years waits :data:`MAX_RETRY_AFTER_SECONDS`."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.fail_next(1, 429, retry_after="999999999")
    async with _client(graph, clock) as client:
        await client.get_user(ada, [SAM])
    assert clock.sleeps == [pytest.approx(MAX_RETRY_AFTER_SECONDS)]


async def test_throttling_without_end_is_an_outage(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """Eleven 429 in a row: the client gives up rather than wait forever."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.fail_next(20, 429, retry_after="1")
    async with _client(graph, clock) as client:
        with pytest.raises(GraphUnavailable, match="kept throttling"):
            await client.get_user(ada, [SAM])
    assert _statuses(graph) == [429] * 11


async def test_a_spent_quota_pauses_before_graph_says_no(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """``RateLimit-Remaining: 0`` with ``RateLimit-Reset: 4``: the next look-up
    waits 4 seconds instead of earning a 429."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.quota_headers = {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "4",
    }
    async with _client(graph, clock) as client:
        await client.get_user(ada, [SAM])
        assert clock.sleeps == []
        await client.get_user(ada, [SAM])
    assert clock.sleeps == [pytest.approx(4.0)]


async def test_503_waits_its_retry_after_then_succeeds(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """503 and 504 are transient and honour ``Retry-After`` like a 429."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.fail_next(1, 503, retry_after="3")
    graph.fail_next(1, 504, retry_after="5")
    async with _client(graph, clock) as client:
        assert await client.get_user(ada, [SAM]) is not None
    assert _statuses(graph) == [503, 504, 200]
    assert clock.sleeps == [pytest.approx(3.0), pytest.approx(5.0)]


async def test_5xx_retries_with_capped_backoff_then_graph_is_unavailable(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """Without ``Retry-After``, failures wait longer each time (half the step
    plus jitter, never over the cap); after :data:`MAX_ATTEMPTS` the client
    gives up with :class:`GraphUnavailable`."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.fail_next(MAX_ATTEMPTS, 500)
    async with _client(graph, clock) as client:
        with pytest.raises(GraphUnavailable, match=f"failed {MAX_ATTEMPTS} times.*500"):
            await client.get_user(ada, [SAM])
    assert _statuses(graph) == [500] * MAX_ATTEMPTS
    assert len(clock.sleeps) == MAX_ATTEMPTS - 1
    for n, slept in enumerate(clock.sleeps, start=1):
        step = min(BACKOFF_CAP_SECONDS, 2.0 ** (n - 1))
        assert step / 2 <= slept <= step


async def test_a_few_5xx_are_retried_away(graph: GraphEmulator, clock: ManualClock) -> None:
    """Failures fewer than the attempts: the look-up succeeds."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.fail_next(MAX_ATTEMPTS - 1, 503)
    async with _client(graph, clock) as client:
        assert await client.get_user(ada, [SAM]) is not None
    assert _statuses(graph) == [503] * (MAX_ATTEMPTS - 1) + [200]


async def test_a_graph_that_does_not_answer_in_time_is_unavailable(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """A look-up slower than ``graph_timeout_seconds`` times out; after
    :data:`MAX_ATTEMPTS` time-outs Graph is unavailable."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.delay = 0.3
    async with _client(graph, clock, graph_timeout_seconds=0.05) as client:
        with pytest.raises(GraphUnavailable, match=r"unreachable after 5 attempts.*Timeout"):
            await client.get_user(ada, [SAM])
    assert len(clock.sleeps) == MAX_ATTEMPTS - 1


async def test_a_graph_nobody_listens_for_is_unavailable(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """Connection refused, every time: retried, then :class:`GraphUnavailable`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    async with _client(graph, clock, graph_login_url=closed) as client:
        with pytest.raises(GraphUnavailable, match=r"unreachable after 5 attempts.*ConnectError"):
            await client.get_user("9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11", [SAM])


# -- Pacing and concurrency ----------------------------------------------------


async def test_the_pacer_spaces_starts_and_voids_slots_a_pause_covers(
    clock: ManualClock,
) -> None:
    """Ten starts a second: each waits its slot a tenth of a second after the
    previous one; a pause moves every later start after its end."""
    pacer = Pacer(10, clock)
    start = clock.now()
    for _ in range(5):
        await pacer.wait()
    assert (clock.now() - start).total_seconds() == pytest.approx(0.4)
    assert clock.sleeps == [pytest.approx(0.1, abs=1e-5)] * 4
    pacer.pause(3)
    await pacer.wait()
    assert (clock.now() - start).total_seconds() == pytest.approx(3.4)


async def test_the_pacer_lets_a_small_burst_catch_up_after_a_lull(clock: ManualClock) -> None:
    """With a burst of 3, three starts go at once, then one per interval;
    after a lull the burst is there again, never more."""
    pacer = Pacer(10, clock, burst=3)
    start = clock.now()
    for _ in range(5):
        await pacer.wait()
    assert (clock.now() - start).total_seconds() == pytest.approx(0.2)
    clock.advance(10)
    clock.sleeps.clear()
    for _ in range(4):
        await pacer.wait()
    assert clock.sleeps == [pytest.approx(0.1, abs=1e-5)]


async def test_concurrent_look_ups_share_one_pace(graph: GraphEmulator, clock: ManualClock) -> None:
    """Twenty look-ups at once at ten a second: after the first
    :data:`PACER_BURST`, they start a tenth of a second apart, not twenty at
    once."""
    ids = [graph.add_user(**{SAM: f"u{n}"}) for n in range(20)]
    async with _client(graph, clock, graph_requests_per_second=10.0) as client:
        start = clock.now()
        found = await asyncio.gather(*(client.get_user(i, [SAM]) for i in ids))
    assert all(user is not None for user in found)
    assert (clock.now() - start).total_seconds() == pytest.approx((20 - PACER_BURST) / 10)
    assert clock.sleeps == [pytest.approx(0.1, abs=1e-5)] * (20 - PACER_BURST)


async def test_no_more_look_ups_in_flight_than_the_concurrency(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """``graph_concurrency`` bounds the requests Graph is answering at once."""
    ids = [graph.add_user(**{SAM: f"u{n}"}) for n in range(12)]
    graph.delay = 0.02
    async with _client(graph, clock, graph_concurrency=3) as client:
        await asyncio.gather(*(client.get_user(i, [SAM]) for i in ids))
    assert graph.max_in_flight == 3


# -- Limits on what Graph answers ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (12345, "not a string (int)"),
        (2**63 - 1, "not a string (int)"),
        (1.5e308, "not a string (float)"),
        (True, "not a string (bool)"),
        ({"nested": {"deeper": ["x"]}}, "not a string (dict)"),
        (["ada"], "not a string (list)"),
        ("ad\x00a", "contains a NUL character"),
        ("a" * 256, "256 characters long; at most 255 taken"),
    ],
)
async def test_a_property_value_that_is_no_plain_string_is_refused(
    graph: GraphEmulator, clock: ManualClock, value: Any, problem: str
) -> None:
    """A selected property's value must be a string without NUL of at most
    255 characters; otherwise it is refused (and said why), the others kept."""
    ada = graph.add_user(**{SAM: value, UPN: "ada@contoso.com"})
    async with _client(graph, clock) as client:
        user = await client.get_user(ada, [SAM, UPN])
    assert user is not None
    assert user.values == {UPN: "ada@contoso.com"}
    assert user.refused == {SAM: problem}


async def test_a_value_of_255_characters_is_taken(graph: GraphEmulator, clock: ManualClock) -> None:
    """The limit is inclusive: 255 characters fit the column."""
    ada = graph.add_user(**{SAM: "a" * 255})
    async with _client(graph, clock) as client:
        user = await client.get_user(ada, [SAM])
    assert user is not None
    assert user.values == {SAM: "a" * 255}


async def test_a_number_past_64_bits_is_a_refused_value(
    graph: GraphEmulator, clock: ManualClock
) -> None:
    """A 30-digit number parses as a float: refused as not a string."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.raw[ada] = Raw(200, b'{"id": "x", "onPremisesSamAccountName": 1' + b"0" * 30 + b"}")
    async with _client(graph, clock) as client:
        user = await client.get_user(ada, [SAM])
    assert user is not None
    assert user.refused == {SAM: "not a string (float)"}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Raw(200, b"x" * (MAX_BODY_BYTES + 1)), "bytes; at most"),
        (Raw(200, b"x" * (MAX_BODY_BYTES + 1), chunked=True), "larger than"),
        (Raw(200, b"<html>oops</html>", "text/html"), "not JSON"),
        (Raw(200, b"not gzip at all", headers={"Content-Encoding": "gzip"}), "cannot be decoded"),
        (
            Raw(
                200, gzip.compress(b" " * 20 * MAX_BODY_BYTES), headers={"Content-Encoding": "gzip"}
            ),
            "larger than",
        ),
        (Raw(200, b'["ada"]'), "a JSON list, not an object"),
        (Raw(200, b'"ada"'), "a JSON str, not an object"),
        (Raw(200, b"[" * 5000 + b"]" * 5000), "not JSON"),
        (Raw(200, b'{"onPremisesSamAccountName": 1' + b"0" * 400 + b"}"), "not JSON"),
    ],
)
async def test_an_answer_that_cannot_be_used_is_refused_for_that_user(
    graph: GraphEmulator, clock: ManualClock, answer: Raw, problem: str
) -> None:
    """Larger than 1 MiB (declared, streamed, or once unzipped), not JSON, not
    decodable, not an object, nested past the parser's depth, a number past
    a double: the look-up is refused, nothing of it is used."""
    ada = graph.add_user(**{SAM: "ada"})
    graph.raw[ada] = answer
    async with _client(graph, clock) as client:
        with pytest.raises(LookupRefused, match=problem):
            await client.get_user(ada, [SAM])


@pytest.mark.parametrize(
    "key",
    [
        "",
        "ada",
        "../../me",
        "9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c11/manager",
        "9b0c5bb4-7d4c-4b11-9f59-0d2bde0e7c1",
        "ada@contoso.com?$select=passwordProfile",
        "ada smith@contoso.com",
        "ada@contoso",
        "ad\x00a@contoso.com",
        "a" * 114 + "@contoso.com",
    ],
)
async def test_a_key_that_is_no_object_id_or_upn_is_never_sent(
    graph: GraphEmulator, clock: ManualClock, key: str
) -> None:
    """Only a GUID or a user principal name goes into the URL."""
    assert not plausible_user_key(key)
    async with _client(graph, clock) as client:
        with pytest.raises(LookupRefused, match="not an object id or user principal name"):
            await client.get_user(key, [SAM])
    assert graph.seen() == []
    assert graph.seen("/oauth2/") == []


def test_plausible_keys() -> None:
    """Object ids in either case and UPNs of members and guests are keys."""
    assert plausible_user_key("9B0C5BB4-7D4C-4B11-9F59-0D2BDE0E7C11")
    assert plausible_user_key("ada.lovelace@contoso.com")
    assert plausible_user_key("o'brien@contoso.co.uk")
    assert plausible_user_key("ada_fabrikam.com#EXT#@contoso.onmicrosoft.com")


def test_an_error_body_is_read_as_graph_and_the_identity_platform_write_it() -> None:
    """The client names Graph's ``error.code: error.message`` and the
    identity platform's ``error: error_description``."""
    from identity_sync.graph import _error_of

    graph_body = {"error": {"code": "Request_ResourceNotFound", "message": "gone"}}
    aad_body = {"error": "invalid_client", "error_description": "AADSTS7000215: bad"}
    assert _error_of(orjson.dumps(graph_body)) == "Request_ResourceNotFound: gone"
    assert _error_of(orjson.dumps(aad_body)) == "invalid_client: AADSTS7000215: bad"
    assert _error_of(b"[]") == ""
    assert len(_error_of(orjson.dumps({"error": {"code": "x" * 5000}}))) == 300
