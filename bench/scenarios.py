"""What each phase sends. A scenario runs in one generator process with that
process's connections (:class:`bench.load.Client`) and returns counters.

Fixed-rate scenarios loop on every connection until the budget or the
deadline stops them. Flows (the Entra initial cycle, the side-by-side mixed
load) are sequences in stages, where later requests use ids returned by
earlier ones; each process takes its own partition of the work, so no stage
waits for another process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import payloads
from .dataset import Dataset, GroupSpec
from .httpclient import encode_query
from .load import Client, Stop, WorkerContext

Request = tuple[str, bytes, tuple[int, ...]]
"""(operation label, request bytes, expected statuses)."""

Source = Callable[[Client, WorkerContext], Iterator[Request]]


def _dataset(ctx: WorkerContext) -> Dataset:
    raw = ctx.spec.params["dataset"]
    groups = tuple(GroupSpec(**g) for g in raw.get("groups", ()))
    return Dataset(users=raw["users"], base_ms=raw["base_ms"], spares=raw["spares"], groups=groups)


def _rng(client: Client) -> random.Random:
    return random.Random(f"{client.target.name}:{client.index}")


def _filter_path(resource: str, expression: str, **extra: str | int) -> str:
    return f"/{resource}?" + encode_query({"filter": expression, **extra})


# Fixed-rate request sources ------------------------------------------------


def get_user(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    data, rng = _dataset(ctx), _rng(client)
    while True:
        i = rng.randrange(data.users)
        yield "GET /Users/{id}", client.build("GET", f"/Users/{data.user_id(i)}"), (200,)


def get_profile(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    """``GET /api/v1/users/{id}/profile`` (the target's prefix is ``/api/v1``)."""
    data, rng = _dataset(ctx), _rng(client)
    while True:
        i = rng.randrange(data.users)
        path = f"/users/{data.user_id(i)}/profile"
        yield "GET /api/v1/users/{id}/profile", client.build("GET", path), (200,)


def filter_username_hit(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    data, rng = _dataset(ctx), _rng(client)
    while True:
        name = data.user_name(rng.randrange(data.users))
        path = _filter_path("Users", f'userName eq "{name}"')
        yield "GET /Users?filter=userName eq (hit)", client.build("GET", path), (200,)


def filter_username_miss(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    rng = _rng(client)
    while True:
        name = f"nobody{rng.randrange(10**9)}@bench.example.com"
        path = _filter_path("Users", f'userName eq "{name}"')
        yield "GET /Users?filter=userName eq (miss)", client.build("GET", path), (200,)


def filter_externalid(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    data, rng = _dataset(ctx), _rng(client)
    while True:
        xid = data.external_id(rng.randrange(data.users))
        path = _filter_path("Users", f'externalId eq "{xid}"')
        yield "GET /Users?filter=externalId eq", client.build("GET", path), (200,)


def list_page(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    """One fixed page: ``startIndex`` (index pagination) or ``cursor``."""
    params: dict[str, str | int] = {"count": ctx.spec.params.get("count", 100)}
    if "cursor" in ctx.spec.params:
        params["cursor"] = ctx.spec.params["cursor"]
    else:
        params["startIndex"] = ctx.spec.params["start_index"]
    data = client.build("GET", "/Users?" + encode_query(params))
    label = ctx.spec.params.get("label", "GET /Users page")
    while True:
        yield label, data, (200,)


def post_user(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    tag = ctx.spec.params.get("tag", "post")
    j = 0
    while True:
        upn = f"{tag}-{client.index}-{j}@bench.example.com"
        body = payloads.create_user(
            upn,
            str(uuid.uuid4()),
            f"Given{j}",
            f"Family{client.index}",
            employee=str(j),
            dept="Benchmarks",
        )
        j += 1
        data = client.build("POST", "/Users", payloads.dumps(body))
        yield "POST /Users", data, (201,)


def patch_user(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    data, rng = _dataset(ctx), _rng(client)
    j = 0
    while True:
        i = rng.randrange(data.regular_users)
        body = payloads.replace_three(f"Patched {i} {j}", f"Family{j}", f"Dept{j % 50}")
        j += 1
        path = f"/Users/{data.user_id(i)}"
        yield (
            "PATCH /Users/{id} (3 replaces)",
            client.build("PATCH", path, payloads.dumps(body)),
            (200,),
        )


def group_member(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    """Each request adds one spare user and removes the one added before, so
    the group's size stays constant and every request changes two rows."""
    data = _dataset(ctx)
    group = data.group(ctx.spec.params["nominal"])
    pair = [data.user_id(data.spare_index(2 * client.index + k)) for k in (0, 1)]
    label = f"PATCH /Groups/{{id}} +1/-1 member ({group.members} members)"
    j = 0
    while True:
        add, remove = pair[j % 2], pair[(j + 1) % 2]
        body = payloads.add_and_remove_member(add, remove)
        j += 1
        yield label, client.build("PATCH", f"/Groups/{group.id}", payloads.dumps(body)), (200, 204)


def group_filter(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    data = _dataset(ctx)
    group = data.group(ctx.spec.params["nominal"])
    path = _filter_path(
        "Groups", f'displayName eq "{group.display_name}"', excludedAttributes="members"
    )
    label = f"GET /Groups?filter=displayName eq&excludedAttributes=members ({group.members})"
    request = client.build("GET", path)
    while True:
        yield label, request, (200,)


def authz_check(client: Client, ctx: WorkerContext) -> Iterator[Request]:
    """``POST /authz/check`` with the bodies of ``params["checks"]`` (``[label,
    JSON text]`` pairs, drawn by :mod:`bench.authz_data`), each connection
    from its own offset."""
    checks = ctx.spec.params["checks"]
    offset = (client.index * 7919) % len(checks)
    for k in itertools.count():
        label, body = checks[(offset + k) % len(checks)]
        yield label, client.build("POST", "/authz/check", body.encode()), (200,)


RING = 8192
"""Requests prepared per connection for the read phases, then sent in a loop."""


class Fixed:
    """A fixed-rate scenario: every connection sends from its source until the
    budget or the deadline stops it. With ``ring``, each connection's first
    :data:`RING` requests are built before the start and then cycled, so that
    building them (ids, URL encoding) costs the generator nothing measured."""

    def __init__(self, source: Source, ring: bool = False) -> None:
        self.source = source
        self.ring = ring
        self.prepared: dict[int, list[Request]] = {}

    def prepare(self, clients: list[Client], ctx: WorkerContext) -> None:
        if self.ring:
            for client in clients:
                self.prepared[client.index] = list(itertools.islice(self.source(client, ctx), RING))

    def _requests(self, client: Client, ctx: WorkerContext) -> Iterator[Request]:
        ring = self.prepared.get(client.index)
        return itertools.cycle(ring) if ring else self.source(client, ctx)

    async def __call__(self, clients: list[Client], ctx: WorkerContext) -> dict[str, Any]:
        async def loop(client: Client) -> None:
            requests = self._requests(client, ctx)
            send = client.send
            try:
                for label, data, expect in requests:
                    await send(label, data, expect)
            except Stop:
                return

        await asyncio.gather(*(loop(c) for c in clients))
        return {}


class Paced(Fixed):
    """A fixed-rate scenario at a set request rate (``params["rate"]`` per
    second over all connections, each sending its share on a schedule) rather
    than as fast as answers come. A request sent on time counts its latency
    from when it was sent; one sent late because the connection still waited
    for the previous answer counts from when it was due, so a slow answer
    shows in the latency of the requests queued behind it (no coordinated
    omission), while the generator's own timer jitter does not."""

    async def __call__(self, clients: list[Client], ctx: WorkerContext) -> dict[str, Any]:
        interval = ctx.spec.concurrency / float(ctx.spec.params["rate"])
        begin = time.monotonic()
        behind = 0

        async def loop(client: Client) -> None:
            nonlocal behind
            requests = self._requests(client, ctx)
            due = begin + interval * client.index / ctx.spec.concurrency
            send = client.send
            try:
                for label, data, expect in requests:
                    now = time.monotonic()
                    late = now >= due
                    if not late:
                        await asyncio.sleep(due - now)
                    await send(label, data, expect, due if late else time.monotonic())
                    behind += late
                    due += interval
            except Stop:
                return

        await asyncio.gather(*(loop(c) for c in clients))
        return {"sent_late": behind}


# Flows ----------------------------------------------------------------------


async def _drain(
    clients: list[Client], items: list[Any], work: Callable[[Client, Any], Awaitable[None]]
) -> None:
    """Every connection takes the next item until none is left (one stage)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    stopped = False

    async def worker(client: Client) -> None:
        nonlocal stopped
        while not stopped:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await work(client, item)
            except Stop:
                stopped = True

    await asyncio.gather(*(worker(c) for c in clients))
    if stopped:
        raise Stop


def _id_of(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _first_id(body: bytes) -> str | None:
    """The id of the first resource of a list response, if any."""
    try:
        resources = json.loads(body).get("Resources") or []
        value = resources[0].get("id") if resources else None
    except (ValueError, AttributeError, IndexError):
        return None
    return value if isinstance(value, str) else None


async def _lookup_or_create(
    client: Client,
    resource: str,
    expression: str,
    body: dict[str, Any],
    labels: tuple[str, str],
    extra: dict[str, str | int] | None = None,
) -> str | None:
    """Entra's pattern: query by the matching attribute, create when absent."""
    path = _filter_path(resource, expression, **(extra or {}))
    status, answer = await client.call(labels[0], "GET", path)
    if status == 200:
        found = _first_id(answer)
        if found:
            return found
    status, answer = await client.call(
        labels[1], "POST", f"/{resource}", payloads.dumps(body), (201,)
    )
    return _id_of(answer) if status == 201 else None


def _owner(index: int, group_size: int, workers: int) -> int:
    """The process that creates user ``index``: the one that owns its group."""
    return (index // group_size) % workers


@dataclass(slots=True)
class Progress:
    """What one process of a flow has done so far (reported even when the
    deadline cuts the flow short)."""

    user_ids: dict[int, str] = field(default_factory=dict)
    group_ids: dict[int, str] = field(default_factory=dict)
    member_patches: int = 0
    disabled: int = 0
    deleted: int = 0

    def counters(self, finished: bool) -> dict[str, Any]:
        return {
            "users_created": len(self.user_ids),
            "groups_created": len(self.group_ids),
            "member_patches": self.member_patches,
            "users_disabled": self.disabled,
            "users_deleted": self.deleted,
            "finished_workers": int(finished),
        }


async def _provision(
    clients: list[Client], ctx: WorkerContext, lookup_groups: bool, done: Progress
) -> None:
    """Stages shared by both flows: users (filter then POST), groups, members,
    recorded in ``done`` as they complete."""
    p = ctx.spec.params
    n_users, n_groups, size, batch = p["users"], p["groups"], p["group_size"], p["batch"]
    tag, extension = p["tag"], p.get("entra_extensions", True)
    mine = [u for u in range(n_users) if _owner(u, size, ctx.workers) == ctx.worker]

    async def user(client: Client, u: int) -> None:
        upn = f"{tag}-u{u}@bench.example.com"
        body = payloads.create_user(
            upn,
            str(uuid.uuid4()),
            f"Given{u}",
            f"Family{u}",
            employee=str(u),
            dept=f"Dept{u % 50}",
            product_extension=extension,
        )
        found = await _lookup_or_create(
            client,
            "Users",
            f'userName eq "{upn}"',
            body,
            ("GET /Users?filter=userName eq", "POST /Users"),
        )
        if found:
            done.user_ids[u] = found

    await _drain(clients, mine, user)

    my_groups = [g for g in range(n_groups) if g % ctx.workers == ctx.worker]

    async def group(client: Client, g: int) -> None:
        name = f"{tag}-group-{g}"
        body = payloads.create_group(name, str(uuid.uuid4()), adscim=extension)
        if lookup_groups:
            found = await _lookup_or_create(
                client,
                "Groups",
                f'displayName eq "{name}"',
                body,
                ("GET /Groups?filter=displayName eq&excludedAttributes=members", "POST /Groups"),
                {"excludedAttributes": "members"},
            )
        else:
            status, answer = await client.call(
                "POST /Groups", "POST", "/Groups", payloads.dumps(body), (201,)
            )
            found = _id_of(answer) if status == 201 else None
        if found:
            done.group_ids[g] = found

    await _drain(clients, my_groups, group)

    patches: list[tuple[str, list[str]]] = []
    for g, gid in sorted(done.group_ids.items()):
        members = [
            done.user_ids[u]
            for u in range(g * size, min((g + 1) * size, n_users))
            if u in done.user_ids
        ]
        patches.extend((gid, members[k : k + batch]) for k in range(0, len(members), batch))

    async def add(client: Client, item: tuple[str, list[str]]) -> None:
        gid, ids = item
        body = payloads.dumps(payloads.add_members(ids))
        await client.call(
            f"PATCH /Groups/{{id}} add {batch} members", "PATCH", f"/Groups/{gid}", body, (200, 204)
        )
        done.member_patches += 1

    await _drain(clients, patches, add)


async def entra_cycle(clients: list[Client], ctx: WorkerContext) -> dict[str, Any]:
    """Entra's initial cycle: users (filter then POST), groups (filter then
    POST), then members added by PATCH in batches."""
    done = Progress()
    try:
        await _provision(clients, ctx, True, done)
    except Stop:
        return done.counters(finished=False)
    return done.counters(finished=True)


async def peer_mix(clients: list[Client], ctx: WorkerContext) -> dict[str, Any]:
    """The side-by-side load of issue 5: users looked up then created, groups
    created and filled 10 members per PATCH, every user disabled by PATCH
    ``active "False"``, then deleted."""
    done = Progress()

    async def disable(client: Client, uid: str) -> None:
        body = payloads.dumps(payloads.set_active(False))
        await client.call(
            'PATCH /Users/{id} active "False"', "PATCH", f"/Users/{uid}", body, (200, 204)
        )
        done.disabled += 1

    async def delete(client: Client, uid: str) -> None:
        await client.call("DELETE /Users/{id}", "DELETE", f"/Users/{uid}", None, (204,))
        done.deleted += 1

    try:
        await _provision(clients, ctx, False, done)
        ids = list(done.user_ids.values())
        await _drain(clients, ids, disable)
        await _drain(clients, ids, delete)
    except Stop:
        return done.counters(finished=False)
    return done.counters(finished=True)


SCENARIOS: dict[str, Callable[[list[Client], WorkerContext], Awaitable[dict[str, Any]]]] = {
    "get_user": Fixed(get_user, ring=True),
    "get_profile": Fixed(get_profile, ring=True),
    "filter_username_hit": Fixed(filter_username_hit, ring=True),
    "filter_username_miss": Fixed(filter_username_miss, ring=True),
    "filter_externalid": Fixed(filter_externalid, ring=True),
    "list_page": Fixed(list_page, ring=True),
    "post_user": Fixed(post_user),
    "patch_user": Fixed(patch_user),
    "group_member": Fixed(group_member),
    "group_filter": Fixed(group_filter, ring=True),
    "authz_check": Fixed(authz_check, ring=True),
    "authz_check_paced": Paced(authz_check, ring=True),
    "entra_cycle": entra_cycle,
    "peer_mix": peer_mix,
}
