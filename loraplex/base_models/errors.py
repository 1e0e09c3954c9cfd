"""Errors of base-model preparation, with messages written for the user."""


class BaseModelUnavailable(Exception):
    """A base model cannot be prepared here (missing package, unknown name)."""
