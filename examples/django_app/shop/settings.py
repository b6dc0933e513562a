"""The example shop's settings; "courier-analytics:" marks what it needs."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    # courier-analytics: applies COURIER_ANALYTICS at start-up, for code outside
    # requests too (management commands, signals).
    "courier_analytics.integrations.django",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # courier-analytics: after AuthenticationMiddleware (it reads request.user).
    "courier_analytics.integrations.django.CourierAnalyticsMiddleware",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}

# courier-analytics: the module-level settings. In production: the key from your
# secret store, and no base_url (Courier's own); here the local stand-in.
COURIER_ANALYTICS = {
    "api_key": os.environ.get("COURIER_API_KEY", "dev-key"),
    "base_url": os.environ.get("COURIER_BASE_URL", "http://127.0.0.1:8787"),
}
