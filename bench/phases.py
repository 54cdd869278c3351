"""The phases of a run: their names, their specifications, and the deep
cursor the pagination phases need."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import urllib.error
import urllib.request
from typing import Any

from .dataset import Dataset
from .httpclient import encode_query
from .load import PhaseSpec, Target
from .report import say

SCIM_PREFIX = "/scim/v2"
API_PREFIX = "/api/v1"
DEEP_PAGE = 10_000
"""The deep page of the pagination phases (or the last full one)."""
PAGE = 100

READ_PHASES = (
    "get_user",
    "get_profile",
    "filter_username_hit",
    "filter_username_miss",
    "filter_externalid",
    "list_index_first",
    "list_index_deep",
    "list_cursor_first",
    "list_cursor_deep",
    "group_filter_10",
    "group_filter_100000",
)

WRITE_PHASES = (
    "post_user",
    "patch_user",
    "group_member_10",
    "group_member_1000",
    "group_member_100000",
)

FLOW_PHASES = ("entra_cycle",)

ALL_PHASES = ("ceiling", *READ_PHASES, *WRITE_PHASES, *FLOW_PHASES)

WRK_SCENARIOS = {
    "get_user",
    "filter_username_hit",
    "filter_username_miss",
    "filter_externalid",
    "list_page",
    "group_filter",
}
"""GET-only scenarios that ``--generator wrk`` replays with wrk."""


def http_get(port: int, path: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "application/scim+json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def deep_cursor(port: int, token: str, data: Dataset, page: int, budget_s: float) -> dict[str, Any]:
    """A cursor for page ``page`` (of 100, by id).

    The server's cursor for a page is the sort key of the previous page's last
    row, so it is made with the server's own ``encode_cursor`` from the seeded
    id at that position, and checked: the page it returns must start with the
    expected user. If that fails (the format changed), the cursor is found by
    following ``nextCursor`` from the first page, for at most ``budget_s``.
    """
    expected_first = data.user_id((page - 1) * PAGE)
    try:
        from identity_store.paging import encode_cursor

        cursor = encode_cursor([data.user_id((page - 1) * PAGE - 1)])
        status, body = http_get(
            port, f"{SCIM_PREFIX}/Users?" + encode_query({"cursor": cursor, "count": PAGE}), token
        )
        resources = json.loads(body).get("Resources") or [] if status == 200 else []
        if resources and resources[0].get("id") == expected_first:
            return {
                "page": page,
                "cursor": cursor,
                "how": "made with identity_store.paging.encode_cursor",
            }
    except Exception as exc:  # fall back to walking
        say(f"  (made-up cursor refused: {type(exc).__name__}: {exc}; walking instead)")
    cursor, reached, deadline = "", 1, time.monotonic() + budget_s
    while reached < page and time.monotonic() < deadline:
        status, body = http_get(
            port, f"{SCIM_PREFIX}/Users?" + encode_query({"cursor": cursor, "count": PAGE}), token
        )
        following = json.loads(body).get("nextCursor") if status == 200 else None
        if not following:
            break
        cursor, reached = following, reached + 1
    return {"page": reached, "cursor": cursor, "how": "followed nextCursor from page 1"}


def fixed_specs(
    args: argparse.Namespace, target: Target, data: Dataset, cursor: dict[str, Any]
) -> list[PhaseSpec]:
    """The fixed-rate phases the arguments select, in the order they run."""
    dataset = data.to_json()
    deep = cursor.get("page", 1)
    api = dataclasses.replace(target, prefix=API_PREFIX, media_type="application/json")

    def spec(name: str, scenario: str, on: Target = target, **params: Any) -> PhaseSpec:
        return PhaseSpec(
            name=name,
            scenario=scenario,
            target=on,
            concurrency=args.concurrency,
            procs=args.gen_procs,
            duration=args.duration,
            warmup=args.warmup,
            max_requests=args.max_requests,
            params={"dataset": dataset, **params},
        )

    candidates = {
        "get_user": spec("get_user", "get_user"),
        "get_profile": spec("get_profile", "get_profile", on=api),
        "filter_username_hit": spec("filter_username_hit", "filter_username_hit"),
        "filter_username_miss": spec("filter_username_miss", "filter_username_miss"),
        "filter_externalid": spec("filter_externalid", "filter_externalid"),
        "list_index_first": spec(
            "list_index_first", "list_page", start_index=1, label="GET /Users?startIndex=1"
        ),
        "list_index_deep": spec(
            "list_index_deep",
            "list_page",
            start_index=(deep - 1) * PAGE + 1,
            label=f"GET /Users?startIndex={(deep - 1) * PAGE + 1} (page {deep})",
        ),
        "list_cursor_first": spec(
            "list_cursor_first", "list_page", cursor="", label="GET /Users?cursor= (page 1)"
        ),
        "list_cursor_deep": spec(
            "list_cursor_deep",
            "list_page",
            cursor=cursor.get("cursor", ""),
            label=f"GET /Users?cursor=… (page {deep})",
        ),
        "group_filter_10": spec("group_filter_10", "group_filter", nominal=10),
        "group_filter_100000": spec("group_filter_100000", "group_filter", nominal=100_000),
        "post_user": spec("post_user", "post_user", tag=f"post{int(time.time())}"),
        "patch_user": spec("patch_user", "patch_user"),
        "group_member_10": spec("group_member_10", "group_member", nominal=10),
        "group_member_1000": spec("group_member_1000", "group_member", nominal=1_000),
        "group_member_100000": spec("group_member_100000", "group_member", nominal=100_000),
    }
    return [candidates[n] for n in (*READ_PHASES, *WRITE_PHASES) if n in args.selected]


def flow_spec(
    name: str,
    scenario: str,
    target: Target,
    args: argparse.Namespace,
    users: int,
    tag: str,
    extension: bool,
    timeout: float,
) -> PhaseSpec:
    groups = max(1, users // 100)
    batch = 10
    return PhaseSpec(
        name=name,
        scenario=scenario,
        target=target,
        concurrency=args.concurrency,
        procs=args.gen_procs,
        duration=timeout,
        warmup=0.0,
        max_requests=5 * users + 3 * groups + users // batch + 1_000,
        params={
            "users": users,
            "groups": groups,
            "group_size": 100,
            "batch": batch,
            "tag": tag,
            "entra_extensions": extension,
        },
    )
