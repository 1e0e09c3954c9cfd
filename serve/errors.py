"""One place where the store's domain errors become HTTP answers.

The body is the OpenAI error object in the same shape vLLM's own server uses
(`{"error": {"message", "type", "param", "code"}}`, code = HTTP status), so a
client sees one error style from the whole endpoint.
"""

from http import HTTPStatus

from fastapi.responses import JSONResponse

from loraplex.adapters import (
    AdapterError,
    AdapterNotFound,
    AdapterNotServable,
    IntegrityError,
    InvalidReference,
    StoreUnavailable,
)

_STATUS: list[tuple[type[AdapterError], HTTPStatus, str]] = [
    # An invalid reference can never name an adapter: answer as for a missing one.
    (InvalidReference, HTTPStatus.NOT_FOUND, "NotFoundError"),
    (AdapterNotFound, HTTPStatus.NOT_FOUND, "NotFoundError"),
    (AdapterNotServable, HTTPStatus.BAD_REQUEST, "BadRequestError"),
    (IntegrityError, HTTPStatus.UNPROCESSABLE_ENTITY, "AdapterIntegrityError"),
    (StoreUnavailable, HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
]


def error_response(
    message: str,
    status: HTTPStatus,
    err_type: str,
    param: str | None = None,
    code: str | int | None = None,
) -> JSONResponse:
    """`code`: OpenAI's code where one fits (`invalid_training_file`), else the status."""
    body = {
        "error": {
            "message": message,
            "type": err_type,
            "param": param,
            "code": code or status.value,
        }
    }
    return JSONResponse(body, status_code=status.value)


def adapter_error_response(exc: AdapterError, param: str | None = "model") -> JSONResponse:
    for cls, status, err_type in _STATUS:
        if isinstance(exc, cls):
            return error_response(str(exc), status, err_type, param)
    return error_response(str(exc), HTTPStatus.BAD_REQUEST, "BadRequestError", param)
