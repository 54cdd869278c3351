"""The identity store's schema enforces what SPEC §3 says, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from identity_store.models import (
    Group,
    GroupMember,
    Lifecycle,
    MemberType,
    User,
    UserAddress,
    UserMultiValue,
)


def _user(name: str, **extra: object) -> User:
    return User(user_name=name, user_name_normalized=name.lower(), **extra)


async def test_user_name_is_unique_in_any_letter_case(session: AsyncSession) -> None:
    """A second user whose userName differs only in case is refused by the database."""
    session.add(_user("Alice@Example.com"))
    await session.commit()
    session.add(_user("alice@example.COM"))
    with pytest.raises(IntegrityError):
        await session.commit()
    await session.rollback()
    count = await session.scalar(select(func.count()).select_from(User))
    assert count == 1


async def test_deleted_user_frees_its_user_name(session: AsyncSession) -> None:
    """A user deleted over SCIM keeps its row but no longer blocks its userName."""
    first = _user("bob")
    session.add(first)
    await session.commit()
    first.deleted_at = datetime.now(UTC)
    first.lifecycle = Lifecycle.SUSPENDED.value
    await session.commit()
    session.add(_user("BOB"))
    await session.commit()
    names = (await session.scalars(select(User.user_name).order_by(User.id))).all()
    assert names == ["bob", "BOB"]


async def test_group_display_name_is_unique(session: AsyncSession) -> None:
    """Two groups may not share a displayName, whatever its case."""
    session.add(Group(display_name="Admins", display_name_normalized="admins"))
    await session.commit()
    session.add(Group(display_name="ADMINS", display_name_normalized="admins"))
    with pytest.raises(IntegrityError):
        await session.commit()


async def test_membership_round_trips_in_both_directions(session: AsyncSession) -> None:
    """Members of a group and groups of a member come back from the membership table."""
    users = [_user(f"user{i}") for i in range(3)]
    groups = [Group(display_name=f"g{i}", display_name_normalized=f"g{i}") for i in range(2)]
    session.add_all(users + groups)
    await session.flush()
    session.add_all(
        [
            GroupMember(group_id=groups[0].id, member_id=users[0].id),
            GroupMember(group_id=groups[0].id, member_id=users[1].id),
            GroupMember(group_id=groups[1].id, member_id=users[1].id),
            GroupMember(
                group_id=groups[1].id, member_id=groups[0].id, member_type=MemberType.GROUP.value
            ),
        ]
    )
    await session.commit()

    members_of_g0 = set(
        (
            await session.scalars(
                select(GroupMember.member_id).where(GroupMember.group_id == groups[0].id)
            )
        ).all()
    )
    assert members_of_g0 == {users[0].id, users[1].id}
    groups_of_u1 = set(
        (
            await session.scalars(
                select(GroupMember.group_id).where(GroupMember.member_id == users[1].id)
            )
        ).all()
    )
    assert groups_of_u1 == {groups[0].id, groups[1].id}
    nested = await session.scalar(
        select(GroupMember.member_type).where(GroupMember.member_id == groups[0].id)
    )
    assert nested == "Group"


async def test_membership_is_unique_per_group_and_member(session: AsyncSession) -> None:
    """The same member cannot be added twice to one group."""
    user = _user("carol")
    group = Group(display_name="g", display_name_normalized="g")
    session.add_all([user, group])
    await session.flush()
    session.add(GroupMember(group_id=group.id, member_id=user.id))
    await session.commit()
    session.add(GroupMember(group_id=group.id, member_id=user.id))
    with pytest.raises(IntegrityError):
        await session.commit()


async def test_deleting_a_group_deletes_its_memberships(session: AsyncSession) -> None:
    """Membership rows go with their group (foreign key cascade, on SQLite too)."""
    user = _user("dave")
    group = Group(display_name="g", display_name_normalized="g")
    session.add_all([user, group])
    await session.flush()
    session.add(GroupMember(group_id=group.id, member_id=user.id))
    await session.commit()
    await session.execute(delete(Group).where(Group.id == group.id))
    await session.commit()
    assert await session.scalar(select(func.count()).select_from(GroupMember)) == 0


async def test_multi_valued_attributes_belong_to_their_user(session: AsyncSession) -> None:
    """Emails, phone numbers and addresses are stored in order and deleted with the user."""
    user = _user("erin")
    user.multi_values = [
        UserMultiValue(
            attribute="emails",
            position=0,
            value="erin@example.com",
            value_normalized="erin@example.com",
            type="work",
            primary=True,
            verified=True,
        ),
        UserMultiValue(attribute="phoneNumbers", position=0, value="+14155550100", type="mobile"),
    ]
    user.addresses = [UserAddress(position=0, type="work", locality="Paris", country="FR")]
    session.add(user)
    await session.commit()

    rows = (
        await session.execute(
            select(UserMultiValue.attribute, UserMultiValue.value, UserMultiValue.verified)
            .where(UserMultiValue.user_id == user.id)
            .order_by(UserMultiValue.attribute)
        )
    ).all()
    assert [tuple(r) for r in rows] == [
        ("emails", "erin@example.com", True),
        ("phoneNumbers", "+14155550100", None),
    ]
    await session.execute(delete(User).where(User.id == user.id))
    await session.commit()
    assert await session.scalar(select(func.count()).select_from(UserMultiValue)) == 0
    assert await session.scalar(select(func.count()).select_from(UserAddress)) == 0


async def test_timestamps_and_json_round_trip(session: AsyncSession) -> None:
    """Datetimes come back timezone-aware in UTC; JSON columns keep their structure."""
    expiry = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    user = _user(
        "frank",
        expiration_date=expiry,
        tags=["contractor", "emea"],
        custom_data={"badge": 42, "nested": {"ok": True}},
        status=[{"name": "AUTH0_SYNC", "status": "PENDING", "message": None}],
    )
    session.add(user)
    await session.commit()
    session.expunge_all()
    loaded = await session.get(User, user.id)
    assert loaded is not None
    assert loaded.expiration_date == expiry
    assert loaded.expiration_date.tzinfo is not None
    assert loaded.expiration_date.utcoffset() == timedelta(0)
    assert loaded.tags == ["contractor", "emea"]
    assert loaded.custom_data == {"badge": 42, "nested": {"ok": True}}
    assert loaded.version == 1
    assert len(loaded.id) == 26


async def test_version_increments_on_every_update(session: AsyncSession) -> None:
    """``version`` (the SCIM ETag) changes on each write."""
    user = _user("gina")
    session.add(user)
    await session.commit()
    user.title = "Engineer"
    await session.commit()
    user.title = "Manager"
    await session.commit()
    assert user.version == 3
