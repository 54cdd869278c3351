"""Caches around scim2-models' validation of request bodies: same results,
less repeated work.

Every request body is still validated by scim2-models
(``ScimUser.model_validate``, ``PatchOp[...].model_validate``). Profiling it
on Microsoft Entra ID's bodies (``python -m bench.validation --profile KIND``)
showed most of its CPU going to work whose answer depends only on the model
class, or on a string already seen:

- ``BaseModel._enforce_scim_context``, run after every model of a body (six
  for an Entra POST /Users: the user, ``name``, an e-mail, two extensions,
  ``manager``), walks every field of the model and calls four or five methods
  on each: 65 fields and about 600 calls per POST, 60 % of its validation.
  Which fields a check can act on follows from the class's annotations
  (only a read-only or write-only field has a mutability to enforce, only a
  ``Required.true`` field a presence, only a ``Returned.always``/``never``
  field a returnability, only a multi-valued field a ``primary``). Here the
  loop visits those fields only, in the same order, calling scim2-models' own
  ``_check_*`` methods with the same arguments, so the first error raised is
  the same. pydantic holds that validator function itself, not the class
  attribute, so its code is swapped for a trampoline to
  :func:`_enforce_scim_context` (and swapped back by :func:`uninstall`).
- ``path.resolution._extension_models`` and ``_designated_model`` rebuild a
  dict of the resource's extensions, and import ``Resource``/``Extension``
  inside the function, each time a PATCH path is examined (a dozen times per
  operation); ``Path._designated_attr_path``, ``_as_value_path`` and
  ``Path.model`` re-derive the same answer for the same path as often. The
  schema table is built once per class; the ``Path`` answers once per ``Path``
  (an immutable string bound to fixed models; the answers are frozen
  dataclasses or classes).
- ``messages.message._check_type_parameter`` re-walks the type parameter of
  ``PatchOp[User[...]]`` at every validation; a class it accepted is
  remembered. What it refuses still raises each time.
- pydantic's ``EmailStr`` runs ``email_validator`` on every address. With
  ``check_deliverability=False``, as pydantic calls it, the result depends on
  the string alone: the ``(name, normalized)`` pair of every accepted address
  is kept in a bounded LRU cache keyed by the exact string. A refused address
  is not cached: it is validated again and refused the same way each time.
  A POST brings a new address, though rarely a new domain: the syntax check
  of the domain (IDNA/UTS-46, two thirds of ``email_validator``'s time), a
  function of the domain string and two options, is cached the same way.
  The whole address pays off when the user is validated again, e.g. by
  ``user_patch`` after each PATCH.

Per-class results live in scim2-models' own per-class cache
(``__scim_field_cache__``, which ``BaseModel.__pydantic_on_complete__``
empties when pydantic builds the class again), so they follow a
``model_rebuild``; the schema table is also checked against the class's
current ``__schema__`` and extension list (a model built from a ``Schema`` is
given its ``__schema__`` after creation). A class overriding one of the
``_check_*`` methods gets the original loop.

Nothing here decides whether a body is valid. ``tests/scim/
test_validation_cache.py`` validates a table of good and bad bodies with
these caches installed and uninstalled and requires identical models and
identical errors.

These patches replace private functions, so they are tied to the releases
they were read against (:data:`CHECKED_SCIM2_MODELS`,
:data:`CHECKED_EMAIL_VALIDATOR`): a test fails when an installed version
differs, so that whoever upgrades it re-reads the
source. The report for upstream (python-scim/scim2-models) is in
docs/benchmarks.md, "scim2-models validation (issue 15)"; once a release
does this itself, this module goes.

:func:`install` runs when :mod:`scim_server.schemas` is imported; the
benchmark (``bench/validation.py``) calls :func:`uninstall` and
:func:`install` to measure both in one run.
"""

from __future__ import annotations

import functools
import importlib.metadata
import types
from collections.abc import Callable
from inspect import isclass
from typing import Any

import pydantic
import pydantic.networks
from scim2_models import Context, Mutability, Required, Returned
from scim2_models import base as scim2_base
from scim2_models.messages import message as scim2_message
from scim2_models.path import access as scim2_access
from scim2_models.path import path as scim2_path
from scim2_models.path import resolution as scim2_resolution
from scim2_models.resources.resource import Extension, Resource

CHECKED_SCIM2_MODELS = "0.12.3"
"""The scim2-models release whose source these patches were read against."""

CHECKED_EMAIL_VALIDATOR = "2.4.0"
"""The email-validator release whose source :func:`_validate_domain` was read against."""

EMAIL_CACHE_SIZE = 4096
"""Accepted e-mail addresses remembered (LRU): about 1.5 MB at most."""

DOMAIN_CACHE_SIZE = 1024
"""Accepted e-mail domains remembered (LRU)."""

_CACHE = "__scim_field_cache__"
"""scim2-models' per-class cache (``base._cached_per_class``), emptied by
``BaseModel.__pydantic_on_complete__`` when pydantic (re)builds the class."""

_originals: dict[tuple[Any, str], Any] = {}
"""What :func:`install` replaced, by (owner, attribute), for :func:`uninstall`."""


def scim2_models_version() -> str:
    return importlib.metadata.version("scim2-models")


def email_validator_version() -> str:
    return importlib.metadata.version("email-validator")


def _class_cache(model: Any) -> dict[Any, Any] | None:
    """The per-class cache scim2-models keeps on a model class, created if
    missing; ``None`` for anything that is not a scim2-models class."""
    if not (isclass(model) and issubclass(model, scim2_base.BaseModel)):
        return None
    try:
        cache: dict[Any, Any] = model.__dict__[_CACHE]
    except KeyError:
        cache = {}
        setattr(model, _CACHE, cache)
    return cache


# --- PATCH paths: which model a bare schema URN designates -----------------

_original_designated_model = scim2_resolution._designated_model
_original_extension_models = scim2_resolution._extension_models


def _schema_table(model: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``({schema.lower(): model}, {schema: extension})`` for a scim2-models
    class, built once per class; ``None`` for anything else. The first table
    answers ``_designated_model`` (the class's own schema first, then its
    extensions in declaration order, as the original loop compares them;
    empty for a class that is neither a resource nor an extension); the
    second is what ``_extension_models`` returns (empty but for a resource).
    The entry is rebuilt when the class's ``__schema__`` or extension list
    was replaced since (a model built from a ``Schema`` gets its
    ``__schema__`` after creation)."""
    schema = getattr(model, "__schema__", None)
    extensions = getattr(model, "__scim_extension_metadata__", None)
    try:
        entry = model.__dict__[_CACHE]["idstore:schema_table"]
        if entry[0] is schema and entry[1] is extensions:
            return entry[2]  # type: ignore[no-any-return]
    except (AttributeError, KeyError, TypeError):
        pass
    cache = _class_cache(model)
    if cache is None:
        return None
    designated: dict[str, Any] = {}
    if issubclass(model, Resource | Extension):
        if schema:
            designated[schema.lower()] = model
        for ext_schema, ext_model in _original_extension_models(model).items():
            designated.setdefault(ext_schema.lower(), ext_model)
    table = (designated, _original_extension_models(model))
    cache["idstore:schema_table"] = (schema, extensions, table)
    return table


def _designated_model(model: Any, path: str) -> Any:
    """``scim2_models.path.resolution._designated_model``, from a per-class table."""
    table = _schema_table(model)
    if table is None:
        return _original_designated_model(model, path)
    return table[0].get(path.lower())


def _extension_models(model: Any) -> dict[str, Any]:
    """``scim2_models.path.resolution._extension_models``, from a per-class
    table (a fresh dict each call, as the original returns)."""
    table = _schema_table(model)
    if table is None:
        return _original_extension_models(model)
    return dict(table[1])


# --- PATCH paths: what a path designates, once per Path object --------------

_original_designated_attr_path = scim2_path.Path._designated_attr_path
_original_as_value_path = scim2_path.Path._as_value_path
_original_path_model = scim2_path.Path.__dict__["model"]


def _memoized(method: Callable[[Any], Any], slot: str) -> Callable[[Any], Any]:
    """A ``Path`` method without arguments, computed once per ``Path``: a
    path is an immutable string bound to fixed models, and what these
    methods answer (frozen dataclasses, a model class) depends on nothing
    else."""

    @functools.wraps(method)
    def memoized(self: Any) -> Any:
        memo = self.__dict__
        try:
            return memo[slot]
        except KeyError:
            value = memo[slot] = method(self)
            return value

    return memoized


_designated_attr_path = _memoized(_original_designated_attr_path, "_idstore_designated")
_as_value_path = _memoized(_original_as_value_path, "_idstore_value_path")
_path_model = property(_memoized(_original_path_model.fget, "_idstore_model"))


# --- PatchOp[...]: the type parameter check ---------------------------------

_original_check_type_parameter = scim2_message._check_type_parameter


def _check_type_parameter(model: type) -> None:
    """``scim2_models.messages.message._check_type_parameter``, remembering the
    classes it accepted (a refusal raises every time)."""
    try:
        if model.__dict__[_CACHE]["idstore:type_parameter_ok"]:
            return
    except (AttributeError, KeyError):
        pass
    _original_check_type_parameter(model)
    cache = _class_cache(model)
    if cache is not None:
        cache["idstore:type_parameter_ok"] = True


# --- The SCIM context check of every model ------------------------------------

_CREATE_OR_REPLACE = (
    Context.RESOURCE_CREATION_REQUEST,
    Context.RESOURCE_REPLACEMENT_REQUEST,
    Context.BULK_REQUEST,
)
_CHECKS = (
    "_check_mutability",
    "_check_necessity",
    "_check_returnability",
    "_check_primary_uniqueness",
    "_is_unresolved_bulk_reference",
)

_enforce_function = scim2_base.BaseModel.__pydantic_decorators__.model_validators[
    "_enforce_scim_context"
].func
"""The function every model's compiled validator calls (pydantic holds it,
not the class attribute, so only its code can be changed)."""

_original_enforce_code = _enforce_function.__code__
_original_enforce = types.FunctionType(
    _original_enforce_code, _enforce_function.__globals__, "_enforce_scim_context"
)


def _plan(
    cls: type[scim2_base.BaseModel], request: bool, create_or_replace: bool
) -> tuple[tuple[str, bool, bool, bool], ...] | None:
    """The fields ``_enforce_scim_context`` can act on, in its order, with the
    checks it can run on each: ``(name, mutability, necessity, primary)`` in
    a request, ``(name, returnability, False, primary)`` in a response.

    A check left out is one that scim2-models' method would return from
    without doing anything, judged from the class's annotations alone:
    ``_check_mutability`` acts on read-only and write-only fields only,
    ``_check_necessity`` on ``Required.true`` fields only,
    ``_check_returnability`` on ``Returned.always``/``never`` fields only,
    ``_check_primary_uniqueness`` on multi-valued fields of models that
    have a ``primary`` sub-attribute only. ``None`` (use
    the original loop) for a class overriding one of those methods."""
    key = ("idstore:enforce_plan", request, create_or_replace)
    try:
        return cls.__dict__[_CACHE][key]  # type: ignore[no-any-return]
    except KeyError:
        pass
    cache = _class_cache(cls)
    assert cache is not None
    plan: tuple[tuple[str, bool, bool, bool], ...] | None
    if any(getattr(cls, name) is not getattr(scim2_base.BaseModel, name) for name in _CHECKS):
        plan = None
    else:
        steps = []
        for name in cls.model_fields:
            element = cls.get_field_root_type(name)
            primary = (
                bool(cls.get_field_multiplicity(name))
                and isclass(element)
                and issubclass(element, pydantic.BaseModel)
                and "primary" in element.model_fields
            )
            if request:
                mutability = cls.get_field_annotation(name, Mutability)
                first = mutability in (Mutability.read_only, Mutability.write_only)
                second = create_or_replace and (
                    cls.get_field_annotation(name, Required) == Required.true
                )
            else:
                returned = cls.get_field_annotation(name, Returned)
                first = returned in (Returned.always, Returned.never)
                second = False
            if first or second or primary:
                steps.append((name, first, second, primary))
        plan = tuple(steps)
    cache[key] = plan
    return plan


def _enforce_scim_context(self: Any, info: Any) -> Any:
    """scim2-models' ``BaseModel._enforce_scim_context`` visiting only the
    fields one of its checks can act on (see :func:`_plan`); the checks are
    scim2-models' own methods, called in the same order with the same
    arguments, so the first error raised is the same."""
    context = info.context
    scim_context = context.get("scim") if context else None
    if not scim_context or scim_context == Context.DEFAULT:
        return self
    request = Context.is_request(scim_context)
    create_or_replace = scim_context in _CREATE_OR_REPLACE
    plan = _plan(type(self), request, create_or_replace)
    if plan is None:
        return _original_enforce(self, info)
    in_bulk = bool(context.get("scim_bulk")) if context else False
    fields_set = self.model_fields_set
    for name, first, second, primary in plan:
        value = getattr(self, name)
        if request:
            if first and name in fields_set:
                self._check_mutability(name, scim_context)
            if second and not self._is_unresolved_bulk_reference(name, in_bulk):
                self._check_necessity(name, value)
        elif first:
            self._check_returnability(name, value)
        if primary and value is not None:
            self._check_primary_uniqueness(name, value)
    return self


def _enforce_trampoline(self: Any, info: Any) -> Any:
    # Its code replaces that of scim2-models' function, and runs with that
    # module's globals: it may only name builtins and attributes.
    return type(self).__idstore_enforce_scim_context__(self, info)


# --- E-mail addresses -------------------------------------------------------

_original_validate_email = pydantic.networks.validate_email
_cached_validate_email: Callable[[str], tuple[str, str]] = functools.lru_cache(
    maxsize=EMAIL_CACHE_SIZE
)(_original_validate_email)


def _validate_email(value: str) -> tuple[str, str]:
    """``pydantic.networks.validate_email`` with a bounded LRU cache of the
    addresses it accepted, keyed by the exact string."""
    if type(value) is not str:  # a str subclass could hash or compare its own way
        return _original_validate_email(value)
    return _cached_validate_email(value)


_email_module = importlib.import_module("email_validator.validate_email")
_original_validate_domain = _email_module.validate_email_domain_name
_cached_validate_domain: Callable[..., dict[str, Any]] = functools.lru_cache(
    maxsize=DOMAIN_CACHE_SIZE
)(_original_validate_domain)


def _validate_domain(domain: str, **options: Any) -> dict[str, Any]:
    """``email_validator.syntax.validate_email_domain_name`` (the part after
    the ``@``) with a bounded LRU cache keyed by the exact domain and the
    options; a copy of the cached dict each time, as the original returns a
    new one."""
    if type(domain) is not str:
        return _original_validate_domain(domain, **options)  # type: ignore[no-any-return]
    return dict(_cached_validate_domain(domain, **options))


def email_cache_info() -> Any:
    """Hits, misses and size of the e-mail cache (``functools`` cache info)."""
    return _cached_validate_email.cache_info()  # type: ignore[attr-defined]


# --- Installing --------------------------------------------------------------

_PATCHES: list[tuple[Any, str, Any]] = [
    (scim2_resolution, "_designated_model", _designated_model),
    (scim2_path, "_designated_model", _designated_model),
    (scim2_access, "_designated_model", _designated_model),
    (scim2_resolution, "_extension_models", _extension_models),
    (scim2_path.Path, "_designated_attr_path", _designated_attr_path),
    (scim2_path.Path, "_as_value_path", _as_value_path),
    (scim2_path.Path, "model", _path_model),
    (scim2_message, "_check_type_parameter", _check_type_parameter),
    (pydantic.networks, "validate_email", _validate_email),
    (_email_module, "validate_email_domain_name", _validate_domain),
]


def _current(owner: Any, name: str) -> Any:
    return owner.__dict__[name] if isclass(owner) else getattr(owner, name)


def installed() -> bool:
    patched = all(_current(owner, name) is patch for owner, name, patch in _PATCHES)
    return patched and _enforce_function.__code__ is _enforce_trampoline.__code__


def install() -> None:
    """Put the caches in place (idempotent)."""
    scim2_base.BaseModel.__idstore_enforce_scim_context__ = _enforce_scim_context  # type: ignore[attr-defined]
    _enforce_function.__code__ = _enforce_trampoline.__code__
    for owner, name, patch in _PATCHES:
        current = _current(owner, name)
        if current is patch:
            continue
        _originals[(owner, name)] = current
        setattr(owner, name, patch)


def uninstall() -> None:
    """Put scim2-models' and pydantic's own functions back and forget what the
    caches held (for the benchmark and the tests that compare both)."""
    _enforce_function.__code__ = _original_enforce_code
    for (owner, name), original in _originals.items():
        setattr(owner, name, original)
    _originals.clear()
    _cached_validate_email.cache_clear()  # type: ignore[attr-defined]
    _cached_validate_domain.cache_clear()  # type: ignore[attr-defined]
    _clear_class_caches(scim2_base.BaseModel)


def _clear_class_caches(root: type) -> None:
    """Empty the per-class caches of ``root`` and its subclasses, so that a
    measurement without the caches starts from what scim2-models alone keeps
    (its own entries are recomputed on demand)."""
    seen: set[type] = set()
    pending = [root]
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if _CACHE in cls.__dict__:
            cls.__dict__[_CACHE].clear()
        pending.extend(cls.__subclasses__())
