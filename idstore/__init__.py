"""Composition root: the ``idstore`` command and the ASGI application factory.

The only package that imports :mod:`scim_server`, :mod:`identity_store` and
:mod:`identity_sync` together, to wire them into processes. It holds no
protocol rules and no SQL: those live in the layers it wires.
"""
