"""OpenAI's Files and Fine-tuning routes on the gateway, over loraplex.jobs.

Contract: each route parses HTTP, calls one operation of
`jobs.FineTuningAPI` in a thread (store I/O), and answers with OpenAI's
objects, list pages and error envelope. A caller's tenant is its key's
`tenant` (or name); an admin key sees every tenant; without keys every
request is the `default_tenant`'s and may see all. Nothing trains here:
jobs wait in the store for a worker (`loraplex worker`, or the one
`--embedded-worker` starts). vLLM 0.32 mounts no `/v1/files` or
`/v1/fine_tuning` route, so these are the only ones.
"""

import asyncio
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from loraplex.adapters import StoreUnavailable
from loraplex.jobs import (
    Caller,
    Conflict,
    FineTuningAPI,
    InvalidRequest,
    JobsError,
    LimitReached,
    NotFound,
)
from loraplex.jobs.pages import page
from loraplex.serve.auth import request_key
from loraplex.serve.errors import error_response

router = APIRouter()
_STATUS = [
    (NotFound, HTTPStatus.NOT_FOUND, "NotFoundError"),
    (InvalidRequest, HTTPStatus.BAD_REQUEST, "BadRequestError"),
    (LimitReached, HTTPStatus.TOO_MANY_REQUESTS, "RateLimitError"),
    (Conflict, HTTPStatus.CONFLICT, "ConflictError"),
]


def _api(request: Request) -> FineTuningAPI:
    return request.app.state.loraplex.fine_tuning


def _caller(request: Request) -> Caller:
    key = request_key(request.scope)
    if key is None:  # no keys configured: one tenant, every record visible
        return Caller(request.app.state.loraplex.settings.default_tenant, admin=True)
    return Caller(key.owner, admin=key.role == "admin")


async def _call(function, *args) -> Any:
    """Run a blocking operation; its domain error becomes OpenAI's error object."""
    try:
        return await asyncio.to_thread(function, *args)
    except JobsError as exc:
        for cls, status, err_type in _STATUS:
            if isinstance(exc, cls):
                return error_response(str(exc), status, err_type, exc.param, exc.code)
        raise
    except StoreUnavailable as exc:
        return error_response(str(exc), HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableError")


def _answer(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, list):
        return JSONResponse(result)
    return JSONResponse(result.public() if hasattr(result, "public") else result)


def _limit(request: Request) -> int | None:
    raw = request.query_params.get("limit")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return -1  # page() answers with the range


async def _page(request: Request, function, *args, newest_first: bool = True) -> Response:
    def listed():
        return page(
            function(*args), after=request.query_params.get("after"), limit=_limit(request),
            newest_first=newest_first,
        )  # fmt: skip

    return _answer(await _call(listed))


# -- files -------------------------------------------------------------------------


@router.post("/v1/files")
async def upload_file(request: Request) -> Response:
    api = _api(request)
    limit = api.limits.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        return error_response(
            f"upload is larger than this server's limit of {limit} bytes",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "RequestTooLargeError", "file",
        )  # fmt: skip
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # starlette's MultiPartException, a bad body
        return error_response(
            f"expected a multipart form with 'file' and 'purpose': {exc}",
            HTTPStatus.BAD_REQUEST, "BadRequestError", "file",
        )  # fmt: skip
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile) or not isinstance(purpose, str):
        return error_response(
            "expected a multipart form with 'file' (the JSONL) and 'purpose'",
            HTTPStatus.BAD_REQUEST, "BadRequestError", "file",
        )  # fmt: skip
    content = await upload.read(limit + 1)
    await form.close()
    filename = upload.filename or "upload.jsonl"
    return _answer(await _call(api.upload, _caller(request), filename, purpose, content))


@router.get("/v1/files")
async def list_files(request: Request) -> Response:
    purpose = request.query_params.get("purpose")
    newest_first = request.query_params.get("order", "desc") != "asc"
    api = _api(request)
    return await _page(request, api.files, _caller(request), purpose, newest_first=newest_first)


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, request: Request) -> Response:
    return _answer(await _call(_api(request).file, _caller(request), file_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> Response:
    api = _api(request)
    record = await _call(api.file, _caller(request), file_id)
    if isinstance(record, Response):
        return record
    content = await _call(api.store.file_content, file_id)
    if isinstance(content, Response):
        return content
    media = "text/csv" if record.filename.endswith(".csv") else "application/jsonl"
    return Response(content, media_type=media)


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> Response:
    return _answer(await _call(_api(request).delete_file, _caller(request), file_id))


# -- fine-tuning jobs ------------------------------------------------------------------


@router.post("/v1/fine_tuning/jobs")
async def create_job(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return error_response(
            "the body must be a JSON object", HTTPStatus.BAD_REQUEST, "BadRequestError"
        )
    return _answer(await _call(_api(request).create_job, _caller(request), body))


@router.get("/v1/fine_tuning/jobs")
async def list_jobs(request: Request) -> Response:
    return await _page(request, _api(request).jobs, _caller(request), _metadata_filter(request))


def _metadata_filter(request: Request) -> dict[str, str] | bool | None:
    """`metadata[k]=v` → {k: v}; `metadata=null` → None (jobs without metadata); else False."""
    if request.query_params.get("metadata") == "null":
        return None
    wanted = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    return wanted or False


@router.get("/v1/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: str, request: Request) -> Response:
    return _answer(await _call(_api(request).job, _caller(request), job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request) -> Response:
    return _answer(await _call(_api(request).cancel, _caller(request), job_id))


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
async def list_events(job_id: str, request: Request) -> Response:
    return await _page(request, _api(request).events, _caller(request), job_id)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
async def list_checkpoints(job_id: str, request: Request) -> Response:
    return await _page(request, _api(request).checkpoints, _caller(request), job_id)
