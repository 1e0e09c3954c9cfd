"""API keys, roles and tenants, as ASGI middleware in front of every route.

Contract:
- Keys come from `--api-keys-file` / `LORAPLEX_API_KEYS_FILE` (a JSON file) or
  `LORAPLEX_API_KEYS` (the same JSON inline): a list of `{"name", "sha256", "role", "adapters"}`.
  Only sha256 hashes are held; a key is never logged. `loraplex new-key`
  makes a key and prints its entry. No keys configured: no auth (a warning at start).
- Roles: `inference` may use the OpenAI routes; `admin` may use everything,
  the adapter routes (`/v1/adapters...`) included. A valid key on a route its
  role does not allow gets 403; no key or a wrong one gets 401.
- Tenants: `adapters` is a list of name patterns (`team-a-*`); a request for an
  adapter outside them gets exactly what a missing adapter gets (404), and
  `/v1/models` lists only what the key may use. `["*"]` (the default) is all.
  `tenant` (default: the key's name) owns the key's fine-tuning files, jobs
  and fine-tuned models: another tenant's are a 404; an admin key sees all.
- `/health` is always open; `/metrics` is open unless `metrics_require_key`.
- Keys are compared in constant time against every configured hash.
"""

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from http import HTTPStatus
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from loraplex.serve.errors import error_response

OPEN_PATHS = {"/health", "/ping"}
ADMIN_PREFIX = "/v1/adapters"
KEY_STATE = "loraplex_api_key"


class ApiKey(BaseModel):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Literal["inference", "admin"] = "inference"
    adapters: list[str] = Field(default_factory=lambda: ["*"])
    tenant: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")

    @property
    def owner(self) -> str:
        """The tenant whose fine-tuning files, jobs and models this key uses."""
        return self.tenant or self.name

    def may_use(self, adapter_name: str) -> bool:
        return any(fnmatchcase(adapter_name, pattern) for pattern in self.adapters)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(keys_file: Path | None, keys_json: str | None) -> list[ApiKey]:
    """Keys from a JSON file, or the same JSON inline; [] when neither is set."""
    if keys_file is not None:
        raw = Path(keys_file).read_text()
    elif keys_json:
        raw = keys_json
    else:
        return []
    try:
        entries = json.loads(raw)
        return [ApiKey.model_validate(e) for e in entries]
    except (ValueError, TypeError) as exc:
        # The message never echoes the input: it may hold key material.
        raise ValueError(
            f"API keys are not a JSON list of {{name, sha256, role, adapters}}: "
            f"{type(exc).__name__}"
        ) from None


@dataclass
class KeyRing:
    keys: list[ApiKey] = field(default_factory=list)
    metrics_require_key: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def find(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented)
        found = None
        for key in self.keys:  # no early exit: the time does not depend on which key
            if hmac.compare_digest(digest, key.sha256):
                found = key
        return found


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
        if name.lower() == b"x-api-key":
            return value.decode("latin-1").strip()
    return None


class AuthMiddleware:
    def __init__(self, app, keyring: KeyRing) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.keyring.enabled:
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in OPEN_PATHS or (path == "/metrics" and not self.keyring.metrics_require_key):
            return await self.app(scope, receive, send)
        token = bearer_token(scope["headers"])
        key = self.keyring.find(token) if token else None
        if key is None:
            response = error_response(
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                HTTPStatus.UNAUTHORIZED,
                "AuthenticationError",
            )
            return await response(scope, receive, send)
        if path.startswith(ADMIN_PREFIX) and key.role != "admin":
            response = error_response(
                f"key '{key.name}' has role '{key.role}', which may not use {path}",
                HTTPStatus.FORBIDDEN,
                "PermissionDeniedError",
            )
            return await response(scope, receive, send)
        scope.setdefault("state", {})[KEY_STATE] = key
        await self.app(scope, receive, send)


def request_key(scope_or_state) -> ApiKey | None:
    state = scope_or_state.get("state", {}) if isinstance(scope_or_state, dict) else {}
    return state.get(KEY_STATE)
