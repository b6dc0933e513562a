"""The Django app config: applies `settings.COURIER_ANALYTICS` when Django starts."""

from __future__ import annotations

from django.apps import AppConfig


class CourierAnalyticsConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    """`"courier_analytics.integrations.django"` in `INSTALLED_APPS`.

    Configures the module-level client at start-up, so that code running outside
    requests (management commands, signals, cron jobs) tracks with the project's
    settings too, and registers the system check `courier_analytics.E001`.
    """

    name = "courier_analytics.integrations.django"
    label = "courier_analytics"
    verbose_name = "courier-analytics"

    def ready(self) -> None:
        from django.core import checks

        from courier_analytics.integrations.django import (
            check_configuration,
            configure_from_settings,
        )

        configure_from_settings()
        # Values (a missing key, "region": "asia") are a system check error, not
        # an exception here, so that `manage.py check` can report them (and
        # SILENCED_SYSTEM_CHECKS can waive them where no key exists, such as a
        # build step); the middleware refuses them when the server starts.
        checks.register(check_configuration)
