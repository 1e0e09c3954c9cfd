"""loraplex's `LoRAResolver`: vLLM's extension point for adapters it has not seen.

Contract: vLLM calls `resolve_lora(base, name)` when a request names a model
it does not hold. The gateway's routing middleware has already turned every
reference into an immutable `name@N` and fetched it, so this resolver only
answers for `name@N` and returns a request whose name and path belong to
that version alone (vLLM keys loaded adapters by id and its prefix cache by
name and path, vllm#42125). Anything else returns None, which vLLM answers
with a 404. It must not raise: vLLM would turn that into a 500.
"""

import logging

from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from loraplex.adapters import AdapterError, AdapterRef
from loraplex.serve.index import AdapterVersion
from loraplex.serve.loader import AdapterLoader

logger = logging.getLogger(__name__)

RESOLVER_NAME = "loraplex-store"


class StoreLoRAResolver(LoRAResolver):
    def __init__(self, loader: AdapterLoader) -> None:
        self.loader = loader

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        try:
            ref = AdapterRef.parse(lora_name)
        except AdapterError:
            return None
        if ref.version is None:
            return None
        adapter = AdapterVersion(ref.name, ref.version)
        try:
            # Routing fetched it already; a direct call (preload) fetches here.
            path = self.loader.local_path(adapter) or await self.loader.ensure_local(adapter)
        except AdapterError as exc:
            logger.warning("cannot serve %s: %s", lora_name, exc)
            return None
        # vLLM replaces lora_int_id with a fresh id of its own counter.
        return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(path))


def install_resolver(resolver: StoreLoRAResolver) -> None:
    """Make the store the only source of adapters: vLLM's filesystem and Hub
    resolvers would load adapters from paths and repos no one published."""
    LoRAResolverRegistry.resolvers.clear()
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, resolver)
