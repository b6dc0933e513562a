"""A minimal Flask shop: identify on login, track what Courier notifies about.

Run the local Courier stand-in, then the app (from the repository root):

    courier-analytics dev --mappings-file examples/mappings.json
    python examples/flask_app/app.py

and try it: log in as ada, then ship an order; the stand-in's page
(http://127.0.0.1:8787/) shows the identify, the track and the notification.

    curl -c /tmp/jar -d username=ada -d password=lovelace localhost:8000/login
    curl -b /tmp/jar -X POST localhost:8000/orders/42/ship
"""

from __future__ import annotations

import os

import courier_analytics as analytics
from courier_analytics.integrations.flask import CourierAnalytics
from flask import Flask, abort, request
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
)

# A stand-in for the app's user table.
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


class User(UserMixin):  # type: ignore[misc]
    def __init__(self, user_id: str) -> None:
        self.id = user_id
        self.email = USERS[user_id]["email"]
        self.name = USERS[user_id]["name"]


app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get(
    "SECRET_KEY", "example-only-not-secret"
)
app.config["COURIER_ANALYTICS"] = {
    # In production: the key from your secret store, and no base_url.
    "api_key": os.environ.get("COURIER_API_KEY", "dev-key"),
    "base_url": os.environ.get("COURIER_BASE_URL", "http://127.0.0.1:8787"),
}
login_manager = LoginManager(app)
CourierAnalytics(app)  # the user comes from flask-login's current_user


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return User(user_id) if user_id in USERS else None


@app.post("/login")
def login() -> dict[str, str]:
    username = request.form.get("username", "")
    if USERS.get(username, {}).get("password") != request.form.get("password"):
        abort(401)
    user = User(username)
    login_user(user)
    # Identify on login: Courier's profile gets the email, and the rest of this
    # request's calls (and later requests, through flask-login) carry the user.
    analytics.identify(user.id, {"email": user.email, "name": user.name})
    analytics.track("Signed In")
    return {"user": user.id}


@app.post("/orders/<int:order_id>/ship")
@login_required
def ship(order_id: int) -> dict[str, object]:
    # No user_id here: the request's scope knows who is logged in. Courier maps
    # "Order Shipped" to a notification template and sends it to the user.
    analytics.track(
        "Order Shipped", {"order_id": order_id, "carrier": "Pigeon Post"}
    )
    return {"order_id": order_id, "shipped_by": current_user.id}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
