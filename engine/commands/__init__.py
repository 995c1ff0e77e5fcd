"""Subcommands of ``python -m engine``: each module here defines ``register(subparsers)``.

Modules are discovered, so the model, store and fidelity commands live beside their owners' code without a central
list to edit.
"""
