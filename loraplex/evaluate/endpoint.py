"""The endpoint under evaluation: any OpenAI-compatible server, reached with `openai`.

`open_endpoint` checks once, before any work, that the server answers and
that every model is served, so a wrong URL, key or model name is one line
at the start instead of a report full of failures. It also learns what it
can about the server: the base model and the quantization from a loraplex
gateway's `loraplex_build_info` metric, the context length from
`/v1/models`, and whether it is vLLM (which takes `prompt_logprobs` and
`structured_outputs`).
"""

import re
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx
import openai

from loraplex.evaluate.errors import EndpointError

BUILD_INFO = re.compile(r"^loraplex_build_info\{(?P<labels>[^}]*)\}", re.MULTILINE)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class EndpointInfo:
    url: str  # the server's root, without /v1
    server: str  # "loraplex", "vllm" or "other"
    base_model: str | None
    quantization: str | None
    max_model_len: int | None


def root_url(url: str) -> str:
    """`http://host:8000/v1/` → `http://host:8000`; the client adds /v1."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise EndpointError(f"invalid endpoint URL {url!r}: use http(s)://host:port")
    return url.rstrip("/").removesuffix("/v1")


def make_client(url: str, api_key: str | None, timeout: float) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{root_url(url)}/v1",
        api_key=api_key or "unused",
        timeout=timeout,
        max_retries=0,
    )


def request_error(exc: BaseException) -> str:
    """One line for a failed request, for the report's failure counts."""
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot connect: {exc.__cause__ or exc}"
    if isinstance(exc, openai.APIStatusError):
        message = exc.message.splitlines()[0] if exc.message else ""
        return f"HTTP {exc.status_code}: {message}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


async def open_endpoint(
    client: openai.AsyncOpenAI, models: list[str], api_key: str | None
) -> EndpointInfo:
    """Probe the server and every model (one 1-token answer each)."""
    url = str(client.base_url).rstrip("/").removesuffix("/v1")
    try:
        cards = (await client.models.list()).data
    except openai.APIStatusError as exc:
        raise EndpointError(f"{url} refused the model list: {request_error(exc)}") from None
    except openai.APIError as exc:
        raise EndpointError(f"{url} is unreachable: {request_error(exc)}") from None
    owners = {getattr(c, "owned_by", None) for c in cards}
    server = "loraplex" if "loraplex" in owners else "vllm" if "vllm" in owners else "other"
    base = next((c for c in cards if not getattr(c, "parent", None)), None)
    info = await _build_info(url, api_key)
    for model in models:
        await _check_model(client, url, model)
    return EndpointInfo(
        url=url,
        server=server,
        base_model=info.get("base_model") or (base.id if base else None),
        quantization=info.get("quantization"),
        max_model_len=getattr(base, "max_model_len", None) if base else None,
    )


async def _check_model(client: openai.AsyncOpenAI, url: str, model: str) -> None:
    try:
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
        )
    except openai.NotFoundError as exc:
        raise EndpointError(f"{url} does not serve model '{model}': {request_error(exc)}") from None
    except openai.APIError as exc:
        raise EndpointError(f"{url} cannot answer with '{model}': {request_error(exc)}") from None


async def _build_info(url: str, api_key: str | None) -> dict[str, str]:
    """A loraplex gateway's build labels from /metrics; {} from any other server."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{url}/metrics", headers=headers)
    except httpx.HTTPError:
        return {}
    match = BUILD_INFO.search(response.text) if response.status_code == 200 else None
    return dict(LABEL.findall(match["labels"])) if match else {}
