"""The fine-tuning jobs' errors: one class per answer a client gets, messages for users.

The gateway maps each class to one HTTP status and OpenAI error type
(serve/fine_tuning.py); the worker turns them into a job's `error`.
"""


class JobsError(Exception):
    """Base class. `param` names the request field at fault, `code` is OpenAI's code."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


class NotFound(JobsError):
    """No such file or job, or one this tenant may not see (the same answer: 404)."""


class InvalidRequest(JobsError):
    """A request the API refuses as asked (400)."""


class LimitReached(JobsError):
    """A tenant's limit on files or queued jobs (429)."""


class Conflict(JobsError):
    """A record changed under too many compare-and-swap attempts in a row (409)."""
