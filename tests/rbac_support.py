"""What the RBAC tests share: the check that the grant rows the changes
kept equal the grant rows rebuilt from the tables."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from identity_store import rbac
from identity_store.models import RbacGrant
from identity_store.store import Store

_COLUMNS = (
    RbacGrant.holder_id,
    RbacGrant.permission,
    RbacGrant.source,
    RbacGrant.binding_id,
    RbacGrant.role_id,
    RbacGrant.resource_type,
    RbacGrant.resource_id,
)


async def assert_grants_kept(store: Store) -> None:
    """``rbac_grants`` as the changes left it equals a rebuild from the RBAC
    tables (the rebuild is rolled back)."""
    async with store.sessions() as session, session.begin():
        kept = Counter(tuple(r) for r in (await session.execute(select(*_COLUMNS))).all())
        await rbac.rebuild_grants(session)
        rebuilt = Counter(tuple(r) for r in (await session.execute(select(*_COLUMNS))).all())
        await session.rollback()
    assert kept == rebuilt, {"missing": rebuilt - kept, "extra": kept - rebuilt}
