"""Run the example shop: migrate, add the demo users, serve on port 8000.

Run the local Courier stand-in, then the shop (from the repository root):

    courier-analytics dev --mappings-file examples/mappings.json
    python examples/django_app/run.py

and try it: log in as ada, then ship an order; the stand-in's page
(http://127.0.0.1:8787/) shows the identify, the track and the notification.

    curl -c /tmp/jar -d username=ada -d password=lovelace localhost:8000/login
    curl -b /tmp/jar -X POST localhost:8000/orders/42/ship
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

import django
from django.core.management import call_command

DEMO_USERS = [
    ("ada", "lovelace", "ada@example.com", "Ada", "Lovelace"),
    ("grace", "hopper", "grace@example.com", "Grace", "Hopper"),
]


def main() -> None:
    django.setup()
    from django.contrib.auth.models import User

    call_command("migrate", verbosity=0)
    for username, password, email, first, last in DEMO_USERS:
        if not User.objects.filter(username=username).exists():
            User.objects.create_user(
                username, email, password, first_name=first, last_name=last
            )
    port = os.environ.get("PORT", "8000")
    call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)


if __name__ == "__main__":
    main()
