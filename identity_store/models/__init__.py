"""SQLAlchemy models of the identity store, one concept per module."""

from .api_token import ApiToken
from .audit import AuditEntry, LifecycleTransition
from .base import Base, new_id, utcnow
from .counter import ResourceCount
from .enums import (
    IdpSource,
    JobKind,
    JobStatus,
    Lifecycle,
    MemberType,
    MultiValuedAttribute,
    OutboxStatus,
    RunStatus,
    RunTrigger,
    StepStatus,
    UserType,
)
from .group import Group, GroupMember
from .job import Job
from .job_input import JobInput, JobReport
from .job_run import JobRun
from .outbox import OutboxEntry, OutboxLease, RateBudget, SyncState
from .password_ticket import PasswordTicket
from .rbac import (
    Binding,
    BindingGroup,
    BindingPermission,
    BindingRole,
    BindingSubject,
    GroupRoleMapping,
    RbacGrant,
    RbacRevision,
    Role,
    RolePermission,
    UserRole,
)
from .user import User, UserAddress, UserMultiValue
from .user_group_config import UserGroupConfig

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "Binding",
    "BindingGroup",
    "BindingPermission",
    "BindingRole",
    "BindingSubject",
    "Group",
    "GroupMember",
    "GroupRoleMapping",
    "IdpSource",
    "Job",
    "JobInput",
    "JobKind",
    "JobReport",
    "JobRun",
    "JobStatus",
    "Lifecycle",
    "LifecycleTransition",
    "MemberType",
    "MultiValuedAttribute",
    "OutboxEntry",
    "OutboxLease",
    "OutboxStatus",
    "PasswordTicket",
    "RateBudget",
    "RbacGrant",
    "RbacRevision",
    "ResourceCount",
    "Role",
    "RolePermission",
    "RunStatus",
    "RunTrigger",
    "StepStatus",
    "SyncState",
    "User",
    "UserAddress",
    "UserGroupConfig",
    "UserMultiValue",
    "UserRole",
    "UserType",
    "new_id",
    "utcnow",
]
