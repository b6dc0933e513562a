"""The shop's views: identify on login, track what Courier notifies about."""

from __future__ import annotations

import courier_analytics as analytics
from django.contrib.auth import authenticate, login
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt  # a JSON API for curl; a real form keeps Django's CSRF protection
@require_POST
def login_view(request: HttpRequest) -> JsonResponse:
    user = authenticate(
        request,
        username=request.POST.get("username"),
        password=request.POST.get("password"),
    )
    if user is None:
        return JsonResponse({"error": "wrong username or password"}, status=401)
    login(request, user)
    # Identify on login: Courier's profile gets the email, and the rest of this
    # request's calls carry the user (later requests get it from request.user).
    analytics.identify(
        user.pk, {"email": user.email, "name": user.get_full_name()}
    )
    analytics.track("Signed In")
    return JsonResponse({"user": user.pk})


@csrf_exempt
@require_POST
def ship(request: HttpRequest, order_id: int) -> JsonResponse:
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in first"}, status=401)
    # No user_id here: the request's scope knows who is logged in. Courier maps
    # "Order Shipped" to a notification template and sends it to the user.
    analytics.track(
        "Order Shipped", {"order_id": order_id, "carrier": "Pigeon Post"}
    )
    return JsonResponse({"order_id": order_id, "shipped_by": request.user.pk})
