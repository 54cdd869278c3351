"""Live-resource counts, kept as deltas so that concurrent writers never
wait for each other on one counter row."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigIntPK


class ResourceCount(Base):
    """One change of the number of live resources of a type (``User``,
    ``Group``): ``+1`` when one is created, ``-1`` when one is deleted,
    written in the transaction of that change.

    The number of live resources is the sum of a type's rows, which stays a
    handful of rows because :func:`identity_store.counts.compact` folds them
    into one. A list's ``totalResults`` (RFC 7644 §3.4.2) reads it instead of
    counting a million rows on every page.
    """

    __tablename__ = "resource_counts"
    __table_args__ = (Index("ix_resource_counts_resource_type", "resource_type"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(16))
    delta: Mapped[int] = mapped_column(BigInteger)
