"""A small Django project's views and URLs, for tests/integrations/test_django.py."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

import courier_analytics as analytics

#: Two requests meet here, so that they are in flight at the same time.
sync_barrier = threading.Barrier(2, timeout=30)
async_barrier: asyncio.Barrier | None = None


def whoami(request: HttpRequest) -> JsonResponse:
    """Track an event and answer with the scope's user."""
    analytics.track("Page Served")
    user = analytics.user()
    return JsonResponse({"user_id": user.id, "anonymous_id": user.anonymous_id} if user else {})


def signin(request: HttpRequest) -> HttpResponse:
    """Log in, identify the user on login, then track: the scope knows the user."""
    user = authenticate(request, username=request.POST["username"], password="pw")
    assert user is not None
    login(request, user)
    analytics.identify(user.pk, {"email": user.email})
    analytics.track("Logged In")
    return HttpResponse("ok")


def interleaved(request: HttpRequest) -> HttpResponse:
    """Track, wait for the other request to be here too, track again (threads)."""
    analytics.track("Step", {"n": 1})
    sync_barrier.wait()
    analytics.track("Step", {"n": 2})
    return HttpResponse("ok")


async def interleaved_async(request: HttpRequest) -> HttpResponse:
    """Track, wait for the other request on the event loop, track again."""
    assert async_barrier is not None
    analytics.track("Step", {"n": 1})
    await async_barrier.wait()
    analytics.track("Step", {"n": 2})
    return HttpResponse("ok")


async def async_whoami(request: HttpRequest) -> JsonResponse:
    """An async view: the scope is there too."""
    analytics.track("Page Served")
    user = analytics.user()
    return JsonResponse({"user_id": user.id if user else None})


def visit(request: HttpRequest) -> JsonResponse:
    """An anonymous visitor's request: identify traits, track a mapped event."""
    analytics.identify(traits={"email": "visitor@example.com"})
    analytics.track("Export Finished", {"report": 7})
    user = analytics.user()
    return JsonResponse({"anonymous_id": user.anonymous_id if user else None})


def boom(request: HttpRequest) -> HttpResponse:
    """Track, then fail as a view with a bug does."""
    analytics.track("Page Served")
    raise ConnectionResetError("the view failed")


async def async_boom(request: HttpRequest) -> HttpResponse:
    """Track, then fail as an async view with a bug does."""
    analytics.track("Page Served")
    raise ConnectionResetError("the async view failed")


class RaisingMiddleware:
    """Placed after the analytics middleware: fails requests that carry X-Test-Boom."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        response = self.get_response(request)
        if "HTTP_X_TEST_BOOM" in request.META:
            raise ConnectionResetError("a later middleware failed")
        return response


urlpatterns = [
    path("whoami", whoami),
    path("signin", signin),
    path("interleaved", interleaved),
    path("interleaved-async", interleaved_async),
    path("async-whoami", async_whoami),
    path("visit", visit),
    path("boom", boom),
    path("async-boom", async_boom),
]
