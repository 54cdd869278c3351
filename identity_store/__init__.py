"""Identity store: models, repositories, services, lifecycle, RBAC, outbox."""
