"""Framework integrations, each an optional extra that imports its framework only when used.

- `courier_analytics.integrations.django`: middleware and app config (`[django]`).
- `courier_analytics.integrations.flask`: the `CourierAnalytics` extension (`[flask]`).
- `courier_analytics.integrations.asgi`: pure ASGI middleware for FastAPI and
  Starlette (`[asgi]`, `[fastapi]`).
- `courier_analytics.integrations.celery`: scope in task headers, flush after tasks and
  at worker shutdown (`[celery]`).
- `courier_analytics.integrations.aws_lambda`: `flush_after(handler)` for Lambda
  and scripts (no extra needed).

Importing this package imports none of them.
"""
