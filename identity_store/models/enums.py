"""Vocabulary of the identity store (SPEC §3 and §4)."""

from enum import StrEnum


class Lifecycle(StrEnum):
    """Where a user stands in its lifecycle (SPEC §4, after ODJ User Management)."""

    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"
    SUSPENDED = "SUSPENDED"
    INACTIVE = "INACTIVE"


class UserType(StrEnum):
    PERSON = "PERSON"
    SERVICE_ACCOUNT = "SERVICE_ACCOUNT"


class IdpSource(StrEnum):
    """Where a user's identity comes from; open-ended, these are the known ones."""

    AAD = "AAD"
    MANUAL = "MANUAL"
    IMPORT = "IMPORT"
    SCIM = "SCIM"


class StepStatus(StrEnum):
    """State of one step of a user's ``status`` list (``PROFILE_SYNC``, ``AUTH0_SYNC``...)."""

    OK = "OK"
    PENDING = "PENDING"
    ERROR = "ERROR"


class MemberType(StrEnum):
    """What a group member is (RFC 7643 §4.2 ``members.type``)."""

    USER = "User"
    GROUP = "Group"


class OutboxStatus(StrEnum):
    PENDING = "PENDING"
    """To deliver, at ``next_attempt_at`` or later."""
    DONE = "DONE"
    """Delivered (or found to need nothing): ``outcome`` says what happened."""
    FAILED = "FAILED"
    """Dead letter: a permanent error, or too many failed attempts; kept with
    ``last_error`` until ``idstore outbox retry`` puts it back."""


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class RunStatus(StrEnum):
    """State of a scheduled job's run (``job_runs.status``)."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"
    """Released by its worker on shutdown; the next worker takes it over."""


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"


class JobKind(StrEnum):
    IMPORT = "IMPORT"
    BULK_ACTIVATION = "BULK_ACTIVATION"
    BULK_PASSWORD_CHANGE = "BULK_PASSWORD_CHANGE"
    AUTH0_IMPORT = "AUTH0_IMPORT"


class MultiValuedAttribute(StrEnum):
    """The user's multi-valued attributes kept in ``user_multi_values`` (RFC 7643 §4.1.2).

    Addresses have sub-attributes of their own and live in ``user_addresses``.
    """

    EMAILS = "emails"
    PHONE_NUMBERS = "phoneNumbers"
    IMS = "ims"
    PHOTOS = "photos"
    ENTITLEMENTS = "entitlements"
    ROLES = "roles"
    X509_CERTIFICATES = "x509Certificates"
