"""The seeded data set, described by a few numbers so that every process can
recompute any user's id, userName and externalId without holding a list of a
million of them.

User ``i`` (0 ≤ i < ``users``) has a 26-character ULID-shaped id that sorts
in the order of ``i`` (its timestamp part is ``base_ms + i // 1000``), the
userName ``user<i>@bench.example.com`` and a UUID externalId derived from
``i``. Seeded ids all sort before ids the server issues during the run, since
``base_ms`` lies a day in the past.

The last ``spares`` users belong to no seeded group: member add/remove phases
add and remove them, so that each PATCH really changes a membership.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

USER_DOMAIN = "bench.example.com"
NOMINAL_GROUP_SIZES = (10, 1_000, 100_000)

_CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
"""Odd, so ``i * _GOLDEN mod 2**64`` is a bijection: distinct ``i``, distinct bits."""


def _mix64(x: int) -> int:
    """splitmix64: a cheap, deterministic scramble of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_PAIRS = [a + b for a in _CROCKFORD.decode() for b in _CROCKFORD.decode()]
"""The 1,024 two-character encodings of a 10-bit value."""


def ulid_string(value: int) -> str:
    """A 128-bit integer in ULID's 26-character Crockford base32 (13 pairs of
    characters, 10 bits each, most significant first)."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 0x3FF] for shift in range(120, -1, -10)])


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One seeded group: its nominal size (10, 1,000, 100,000), the members it
    really has (users ``0 .. members-1``), its id and display name."""

    nominal: int
    members: int
    id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class Dataset:
    """Everything the load phases need to know about the seeded store."""

    users: int
    base_ms: int
    spares: int
    groups: tuple[GroupSpec, ...] = field(default_factory=tuple)

    @property
    def regular_users(self) -> int:
        """Users that may belong to seeded groups (all but the spares)."""
        return self.users - self.spares

    def user_id(self, i: int) -> str:
        ts = self.base_ms + i // 1000
        randomness = ((i % 1000) << 70) | (((i * _GOLDEN) & _MASK64) << 6)
        return ulid_string((ts << 80) | randomness)

    @staticmethod
    def user_name(i: int) -> str:
        return f"user{i:07d}@{USER_DOMAIN}"

    @staticmethod
    def external_id(i: int) -> str:
        """A version-4-shaped UUID, distinct for every ``i``."""
        h = f"{(i * _GOLDEN) & _MASK64:016x}{_mix64(i) & _MASK64:016x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def spare_index(self, k: int) -> int:
        """The index of spare user ``k`` (0 ≤ k < ``spares``)."""
        return self.regular_users + k

    def group(self, nominal: int) -> GroupSpec:
        for g in self.groups:
            if g.nominal == nominal:
                return g
        raise KeyError(nominal)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def plan(cls, users: int, base_ms: int, spares: int) -> Dataset:
        """The data set for ``users`` users, group ids still to be assigned."""
        return cls(users=users, base_ms=base_ms, spares=spares)


def group_id(base_ms: int, k: int) -> str:
    """Id of seeded group ``k``, sortable and distinct from every user id."""
    return ulid_string((base_ms << 80) | ((0xFFFF << 64) + k))
