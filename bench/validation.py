"""CPU per validation of Microsoft Entra ID's request bodies by scim2-models,
with and without :mod:`scim_server.validation`'s caches, in one run.

``python -m bench.validation`` validates each kind of body the way the
handlers do (the same functions, the same context and policy), alternating
rounds with the caches uninstalled ("before") and installed ("after"), and
prints the median µs of CPU (``time.process_time``) per validation of each:

- ``post_user``: Entra's POST /Users (enterprise and product extensions), a
  new ``userName``/e-mail each time, as a provisioning run sends them
  (``users_api.validate_user`` after ``entra.normalise_resource``);
- ``patch_user_replace3``: Entra's update, three ``Replace`` operations
  (``users_api.validate_patch``);
- ``patch_user_active``: Entra's disable, ``Replace active "False"``;
- ``patch_group_members``: a membership PATCH adding one member and removing
  one (the validation of ``groups_api.patch``);
- ``apply_user_patch``: ``user_patch.patched`` applying the three replaces to
  a stored user of 1,000 recently created ones (it validates the resulting
  user again, e-mail included).

``--profile KIND`` prints a cProfile of one kind instead (``--before`` for
scim2-models alone). ``--inprocess post|patch|members --url URL`` runs
``bench.inprocess`` (the whole application, CPU per request) against a store
``bench.run`` seeded, alternating rounds without and with the caches. The
machine is shared: compare the two columns of one run, not figures of
different runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from scim2_models import Context, PatchOp

from scim_server import entra, user_patch, validation
from scim_server.schemas import PATCH_POLICY, ScimGroup
from scim_server.users_api import validate_patch, validate_user

from . import payloads

KINDS = (
    "post_user",
    "patch_user_replace3",
    "patch_user_active",
    "patch_group_members",
    "apply_user_patch",
)


def _post_bodies(count: int) -> list[dict[str, Any]]:
    return [
        payloads.create_user(
            f"user.{i}@bench.example.com", f"object-{i}", "Given", f"Family{i}", employee=str(i)
        )
        for i in range(count)
    ]


def _stored_documents(count: int) -> list[dict[str, Any]]:
    """Users as ``user_document`` renders them, after their POST."""
    documents = []
    for i, body in enumerate(_post_bodies(count)):
        resource = validate_user(entra.normalise_resource(body), Context.RESOURCE_CREATION_REQUEST)
        document = resource.model_dump(scim_ctx=Context.RESOURCE_CREATION_RESPONSE)
        document["id"] = f"id-{i}"
        document["meta"] = {
            "resourceType": "User",
            "location": f"https://bench/Users/id-{i}",
            "version": 'W/"1"',
        }
        documents.append(document)
    return documents


def _group_patch(body: dict[str, Any]) -> PatchOp[ScimGroup]:
    """What ``groups_api.patch`` validates."""
    return PatchOp[ScimGroup].model_validate(
        entra.normalise_patch(body),
        scim_ctx=Context.RESOURCE_PATCH_REQUEST,
        scim_policy=PATCH_POLICY,
    )


def workloads(users: int = 5000) -> dict[str, Callable[[], object]]:
    """One validation of each kind per call, cycling through varied bodies."""
    posts = itertools.cycle(_post_bodies(users))
    replaces = itertools.cycle(
        [payloads.replace_three(f"Name {i}", f"Family {i}", f"Dept {i % 7}") for i in range(64)]
    )
    actives = itertools.cycle([payloads.set_active(False), payloads.set_active(True)])
    members = itertools.cycle(
        [payloads.add_and_remove_member(f"member-{i}", f"member-{i + 1}") for i in range(64)]
    )
    stored = itertools.cycle(_stored_documents(1000))
    three = validate_patch(payloads.replace_three("New name", "New family", "New dept"))
    return {
        "post_user": lambda: validate_user(
            entra.normalise_resource(next(posts)), Context.RESOURCE_CREATION_REQUEST
        ),
        "patch_user_replace3": lambda: validate_patch(next(replaces)),
        "patch_user_active": lambda: validate_patch(next(actives)),
        "patch_group_members": lambda: _group_patch(next(members)),
        "apply_user_patch": lambda: user_patch.patched(three, next(stored)),
    }


def _cpu_us(call: Callable[[], object], count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - start) / count * 1e6


def measure(
    kinds: dict[str, Callable[[], object]], count: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Median µs per call of each kind, (before, after), alternating rounds."""
    samples: dict[str, dict[bool, list[float]]] = {k: {False: [], True: []} for k in kinds}
    try:
        for _ in range(rounds):
            for cached in (False, True):
                (validation.install if cached else validation.uninstall)()
                for name, call in kinds.items():
                    call()  # warm
                    samples[name][cached].append(_cpu_us(call, count))
    finally:
        validation.install()
    return {
        name: (statistics.median(by[False]), statistics.median(by[True]))
        for name, by in samples.items()
    }


def profile(call: Callable[[], object], count: int, cached: bool, lines: int) -> None:
    (validation.install if cached else validation.uninstall)()
    try:
        call()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(count):
            call()
        profiler.disable()
    finally:
        validation.install()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(lines)


def inprocess(kind: str, url: str, requests: int, rounds: int) -> None:
    """``bench.inprocess`` of one kind, alternating without and with the caches."""
    from . import inprocess as whole_app

    lines: dict[bool, list[str]] = {False: [], True: []}
    try:
        for _ in range(rounds):
            for cached in (False, True):
                (validation.install if cached else validation.uninstall)()
                args = argparse.Namespace(
                    url=url, kind=kind, requests=requests, warmup=50, breakdown=False
                )
                asyncio.run(whole_app.run(args, say=lines[cached].append))
    finally:
        validation.install()
    for cached in (False, True):
        for line in lines[cached]:
            print(f"{'after ' if cached else 'before'} {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="validations per sample")
    parser.add_argument("--rounds", type=int, default=5, help="samples per kind and mode")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds")
    parser.add_argument("--profile", choices=KINDS, help="cProfile one kind instead")
    parser.add_argument("--before", action="store_true", help="profile without the caches")
    parser.add_argument("--lines", type=int, default=30, help="profile lines shown")
    parser.add_argument("--inprocess", choices=("post", "patch", "members"))
    parser.add_argument("--url", help="for --inprocess: a store seeded by bench.run")
    parser.add_argument("--requests", type=int, default=1000, help="for --inprocess")
    args = parser.parse_args(argv)
    if args.inprocess:
        if not args.url:
            parser.error("--inprocess needs --url")
        inprocess(args.inprocess, args.url, args.requests, args.rounds)
        return 0
    kinds = workloads()
    if args.profile:
        profile(kinds[args.profile], args.count, not args.before, args.lines)
        return 0
    chosen = {name: kinds[name] for name in args.kinds.split(",")}
    print(f"scim2-models {validation.scim2_models_version()}, {args.rounds} rounds x {args.count}")
    print(f"{'kind':<22} {'before µs':>10} {'after µs':>10} {'after/before':>13}")
    for name, (before, after) in measure(chosen, args.count, args.rounds).items():
        print(f"{name:<22} {before:>10.0f} {after:>10.0f} {after / before:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
