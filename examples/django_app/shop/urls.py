"""The example shop's URLs."""

from __future__ import annotations

from django.urls import path

from shop import views

urlpatterns = [
    path("login", views.login_view),
    path("orders/<int:order_id>/ship", views.ship),
]
