"""API keys on every request but the health checks: `Authorization: Bearer fk_...`. No key or an unknown or
revoked one: 401; a key without the scope the endpoint needs: 403."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common.access.contracts import ApiKey, Scope
from common.api import FulfillmentApi
from common.http.problems import ProblemError

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat="fk_<id>_<secret>",
    description="An API key from `fulfill api-key create --scope S --name N`, as `Authorization: Bearer <key>`.",
)


def api_of(request: Request) -> FulfillmentApi:
    api: FulfillmentApi = request.app.state.api
    return api


async def ops_key(request: Request, secret: str | None) -> ApiKey | None:
    """The live ops-scoped key `secret` is (a browser's sign-in cookie, a bearer header), else None."""
    if not secret:
        return None
    key = await api_of(request).store.api_keys.authenticate(secret)
    return key if key is not None and Scope.OPS in key.scopes else None


def allowed(*scopes: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency: the caller's key, which must hold one of `scopes`."""

    async def caller(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> ApiKey:
        challenge = {"WWW-Authenticate": 'Bearer realm="fulfill"'}
        if credentials is None:
            raise ProblemError(
                401, "unauthenticated", "No API key", "send an API key: Authorization: Bearer <key>", headers=challenge
            )
        key = await api_of(request).store.api_keys.authenticate(credentials.credentials)
        if key is None:
            raise ProblemError(
                401, "unauthenticated", "Invalid API key", "the API key is not valid or was revoked", headers=challenge
            )
        if not key.scopes & set(scopes):
            need = " or ".join(s.value for s in scopes)
            raise ProblemError(
                403, "forbidden", "Missing scope", f"API key {key.name!r} lacks the scope this needs: {need}"
            )
        return key

    return caller


def own_orders_only(key: ApiKey) -> str | None:
    """The client whose orders alone this key may read (an intake key's), None if it may read every order."""
    return None if key.scopes & {Scope.READ, Scope.OPS} else key.name


# Who may call what. Reading is open to every scope that works with what it reads.
# The providers' webhooks (/v1/webhooks/easypost, /v1/webhooks/twilio/..., /v1/webhooks/3pl/{provider}) take
# no key: each checks the provider's signature instead.
INTAKE = allowed(Scope.INTAKE)
OPS = allowed(Scope.OPS)
WAREHOUSE = allowed(Scope.WAREHOUSE)
OPS_OR_WAREHOUSE = allowed(Scope.OPS, Scope.WAREHOUSE)
READ_ORDERS = allowed(Scope.READ, Scope.OPS, Scope.INTAKE)  # an intake key: the orders it placed (own_orders_only)
READ_ALL = allowed(Scope.READ, Scope.OPS)  # also the parcels at 3PLs
READ_WAREHOUSE = allowed(Scope.READ, Scope.OPS, Scope.WAREHOUSE)
