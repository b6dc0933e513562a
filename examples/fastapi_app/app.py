"""A minimal FastAPI shop: identify on login, track what Courier notifies about.

Run the local Courier stand-in, then the app (from the repository root):

    courier-analytics dev --mappings-file examples/mappings.json
    uvicorn --app-dir examples/fastapi_app app:app --port 8000

and try it: log in as ada (the answer is a token), then ship an order with it.

    curl --json '{"username": "ada", "password": "lovelace"}' \\
         localhost:8000/login
    curl -X POST -H "Authorization: Bearer <token>" \\
         localhost:8000/orders/42/ship
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import courier_analytics as analytics
from courier_analytics.integrations.asgi import CourierAnalyticsMiddleware
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    SimpleUser,
    requires,
)
from starlette.middleware.authentication import AuthenticationMiddleware

# In production: the key from your secret store, and no base_url (Courier's).
analytics.configure(
    api_key=os.environ.get("COURIER_API_KEY", "dev-key"),
    base_url=os.environ.get("COURIER_BASE_URL", "http://127.0.0.1:8787"),
)

# Stand-ins for the app's user table and session store.
USERS = {
    "ada": {
        "password": "lovelace",
        "email": "ada@example.com",
        "name": "Ada Lovelace",
    },
    "grace": {
        "password": "hopper",
        "email": "grace@example.com",
        "name": "Grace Hopper",
    },
}
TOKENS: dict[str, str] = {}


class BearerTokens(AuthenticationBackend):  # type: ignore[misc]
    """Checks `Authorization: Bearer <token>` against the tokens of /login."""

    async def authenticate(
        self, conn: Any
    ) -> tuple[AuthCredentials, SimpleUser] | None:
        scheme, _, token = conn.headers.get("Authorization", "").partition(" ")
        user = TOKENS.get(token) if scheme.lower() == "bearer" else None
        return (
            (AuthCredentials(["authenticated"]), SimpleUser(user))
            if user
            else None
        )


app = FastAPI()
# add_middleware wraps the middleware added before: analytics first, so that
# authentication runs outside it and has set scope["user"] when it runs.
app.add_middleware(CourierAnalyticsMiddleware)
app.add_middleware(AuthenticationMiddleware, backend=BearerTokens())


class Credentials(BaseModel):
    username: str
    password: str


@app.post("/login")
async def login(credentials: Credentials) -> dict[str, str]:
    username = credentials.username
    if USERS.get(username, {}).get("password") != credentials.password:
        raise HTTPException(status_code=401)
    token = secrets.token_urlsafe(16)
    TOKENS[token] = username
    # Identify on login: the profile gets the email, and this request's later
    # calls carry the user (the next requests get it from the token).
    analytics.identify(username, {"email": USERS[username]["email"]})
    analytics.track("Signed In")
    return {"token": token}


@app.post("/orders/{order_id}/ship")
@requires("authenticated")
async def ship(request: Request, order_id: int) -> dict[str, object]:
    # No user_id here: the request's scope has the authenticated user. Courier
    # maps "Order Shipped" to a notification template and sends it to the user.
    analytics.track(
        "Order Shipped", {"order_id": order_id, "carrier": "Pigeon Post"}
    )
    return {"order_id": order_id, "shipped_by": request.user.identity}
