"""Who may see the dashboard: anyone on 127.0.0.1, else only holders of the token.

Bound to loopback, the dashboard is as private as the machine. Bound to any other address
it needs SPECTASK_DASHBOARD_TOKEN (`spectask dashboard` refuses to start without one), and
then every request must carry it: `Authorization: Bearer <token>` (the API, Prometheus'
`bearer_token`), or the cookie the page sets after it was opened once as `/?token=<token>`
(EventSource cannot send headers). The comparison takes constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from spectask.errors import ConfigError

TOKEN_VARIABLE = "SPECTASK_DASHBOARD_TOKEN"
COOKIE = "spectask_dashboard"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
MIN_TOKEN_LENGTH = 16


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token, and a token too short to guess."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{TOKEN_VARIABLE} is shorter than {MIN_TOKEN_LENGTH} characters; use a long "
            "random one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if host not in LOOPBACK and not token:
        raise ConfigError(
            f"the dashboard binds {host}, reachable from other hosts: set {TOKEN_VARIABLE} "
            "to a long random secret (the page and the API then ask for it), or bind 127.0.0.1"
        )


def _presented(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE)


Next = Callable[[Request], Awaitable[Response]]


def token_middleware(token: str) -> Callable[[Request, Next], Awaitable[Response]]:
    """An HTTP middleware that lets through only requests with `token`."""
    expected = token.encode()

    async def check(request: Request, call_next: Next) -> Response:
        offered = request.query_params.get("token")
        on_page = offered is not None and request.url.path == "/"
        if on_page and hmac.compare_digest((offered or "").encode(), expected):
            response = RedirectResponse("/", status_code=303)  # the token leaves the URL
            response.set_cookie(
                COOKIE, token, httponly=True, samesite="strict", secure=request.url.is_secure
            )
            return response
        presented = _presented(request)
        if presented is None or not hmac.compare_digest(presented.encode(), expected):
            return JSONResponse(
                {
                    "detail": f"this dashboard needs its token ({TOKEN_VARIABLE}): open "
                    "/?token=... once, or send Authorization: Bearer ..."
                },
                status_code=401,
            )
        return await call_next(request)

    return check
