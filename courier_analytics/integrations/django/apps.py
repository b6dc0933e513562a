"""The Django app config: applies `settings.COURIER_ANALYTICS` when Django starts."""

from __future__ import annotations

from django.apps import AppConfig


class CourierAnalyticsConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    """`"courier_analytics.integrations.django"` in `INSTALLED_APPS`.

    Configures the module-level client at start-up, so that code running outside
    requests (management commands, signals, cron jobs) tracks with the project's
    settings too.
    """

    name = "courier_analytics.integrations.django"
    label = "courier_analytics"
    verbose_name = "courier-analytics"

    def ready(self) -> None:
        from courier_analytics.integrations.django import configure_from_settings

        configure_from_settings()
