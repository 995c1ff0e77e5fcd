"""Subcommands of ``python -m engine``: each module here defines ``register(subparsers)``.

Modules are discovered, so the model, store and fidelity commands live beside their owners' code without a central
list to edit. What they share lives here, in the package every one of them imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.store import Store


class UsageError(Exception):
    """Bad flags or inputs; printed as one line and exit code 2."""


def open_cli_store(db: str | None) -> Store:
    """The store a command works on: ``--db FILE`` as it is, else the default database (seeded with the bundled
    runs on first use); a corrupt or foreign file is a usage error."""
    from engine.store import Store, StoreError, open_store  # imported here: the model commands need no database

    try:
        return Store(db, shared=True) if db else open_store()
    except StoreError as exc:
        raise UsageError(str(exc)) from None
