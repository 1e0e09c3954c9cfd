"""Evaluation's errors: each stops a run for a reason the user can fix, in one line."""


class EvalError(Exception):
    """Base class: the CLI prints the message on one line and exits 1."""


class EndpointError(EvalError):
    """The endpoint cannot be reached, refuses the key, or does not serve a model."""


class EvalDataError(EvalError):
    """The evaluation data cannot be used (unreadable, empty, nothing valid)."""
