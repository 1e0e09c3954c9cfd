"""loraplex's own HTTP routes: the model list and adapter administration.

`GET /v1/models` replaces vLLM's (which lists only adapters already loaded,
with their local paths): it lists the base, every adapter in the store and
every fine-tuned model (`ft:…`) the key may use, each with `parent` = the
base, and no filesystem path. The admin routes
show, load (and pin), unload and refresh adapters of the store; vLLM's own
`/v1/load_lora_adapter` routes, which load from any path, are removed.
"""

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from vllm.entrypoints.serve.engine.protocol import ModelCard, ModelPermission

from loraplex.adapters import AdapterError, AdapterRef
from loraplex.serve.auth import request_key
from loraplex.serve.errors import adapter_error_response
from loraplex.serve.index import AdapterVersion

if TYPE_CHECKING:
    from loraplex.serve.app import Gateway

router = APIRouter()


def _gateway(request: Request) -> "Gateway":
    return request.app.state.loraplex


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    gateway = _gateway(request)
    base = gateway.base_name
    max_len = request.app.state.engine_client.model_config.max_model_len
    base_card = ModelCard(
        id=base, root=base, owned_by="loraplex", max_model_len=max_len,
        permission=[ModelPermission()],
    )  # fmt: skip
    names = gateway.visible_names(request)
    fine_tuned = gateway.job_watch.models(request_key(request.scope))
    gateway.model_cards.forget_missing(set(gateway.index.names()) | set(fine_tuned))
    data = [
        base_card.model_dump(),
        *gateway.model_cards.adapters(names),
        *gateway.model_cards.adapters(fine_tuned),
    ]
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/adapters")
async def list_adapters(request: Request) -> JSONResponse:
    gateway = _gateway(request)
    in_engine = await gateway.engine_lora_names(request.app.state)
    data = []
    for name in gateway.visible_names(request):
        versions = await asyncio.to_thread(gateway.store.list_versions, name)
        aliases = gateway.index.aliases(name)
        data.append(
            {
                "name": name,
                "aliases": aliases,
                "versions": [
                    {
                        "version": v,
                        "aliases": sorted(a for a, n in aliases.items() if n == v),
                        "state": gateway.state_of(AdapterVersion(name, v), in_engine),
                    }
                    for v in versions
                ],
            }
        )
    return JSONResponse({"object": "list", "data": data})


@router.post("/v1/adapters/refresh")
async def refresh_adapters(request: Request) -> JSONResponse:
    gateway = _gateway(request)
    try:
        await asyncio.to_thread(gateway.index.refresh)
    except AdapterError as exc:
        return adapter_error_response(exc, param=None)
    return JSONResponse({"refreshed": True, "adapters": len(gateway.index.names())})


@router.post("/v1/adapters/{ref}/load")
async def load_adapter(ref: str, request: Request) -> JSONResponse:
    gateway = _gateway(request)
    try:
        adapter = await gateway.router.route(ref)
        await gateway.load_into_engine(request.app.state, adapter, pin=True)
    except AdapterError as exc:
        return adapter_error_response(exc, param="ref")
    return JSONResponse({"adapter": adapter.lora_name, "state": "engine", "pinned": True})


@router.post("/v1/adapters/{ref}/unload")
async def unload_adapter(ref: str, request: Request) -> JSONResponse:
    gateway = _gateway(request)
    try:
        adapter = await asyncio.to_thread(gateway.index.resolve, AdapterRef.parse(ref))
    except AdapterError as exc:
        return adapter_error_response(exc, param="ref")
    unloaded = await gateway.unload_from_engine(request.app.state, adapter)
    return JSONResponse({"adapter": adapter.lora_name, "unloaded": unloaded})
