"""Identity store: use cases, reads, models, lifecycle, RBAC, outbox (SPEC §2, §3).

The public API, which the server, the sync workers and the CLI use (and
``tests/test_architecture.py`` holds the server to), is:

- :mod:`identity_store.store`: :class:`~identity_store.store.Store`, the open
  store, and its transaction runner;
- the use cases, one module per aggregate: :mod:`identity_store.users`,
  :mod:`identity_store.groups`, :mod:`identity_store.tokens`, and a user's
  lifecycle for its operators, :mod:`identity_store.lifecycle_admin`;
- the types they take and return: :mod:`identity_store.actor`,
  :mod:`identity_store.paging`, :mod:`identity_store.attributes`,
  :mod:`identity_store.settings`, and the errors they raise,
  :mod:`identity_store.errors`.

Everything else (models, statements, read paths, side rows) is internal.
docs/architecture.md describes how the parts fit.
"""
