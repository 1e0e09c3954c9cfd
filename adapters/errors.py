"""The adapter store's errors: one class per kind of failure, messages for users.

The gateway maps each class to one HTTP status (serve/errors.py) and the CLI
prints the message on one line; nothing else needs to know the details.
"""


class AdapterError(Exception):
    """Base class: anything the store refuses or cannot do."""


class InvalidReference(AdapterError):
    """A reference that can never name an adapter (`Bad/Name`, `a@x`, ...)."""


class AdapterNotFound(AdapterError):
    """A well-formed reference the store does not hold."""


class AdapterNotServable(AdapterError):
    """An adapter vLLM could not serve, or not on this base model."""


class IntegrityError(AdapterError):
    """Stored bytes that do not match their manifest."""


class StoreUnavailable(AdapterError):
    """The store cannot be reached or does not exist."""


class AliasConflict(AdapterError):
    """An alias update lost too many compare-and-swap races in a row."""


class VersionInUse(AdapterError):
    """A version an alias points at, deleted without --force."""
