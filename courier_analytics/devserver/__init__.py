"""A local stand-in for the parts of Courier that courier-analytics talks to.

It answers `POST /inbound/segment`, `POST /inbound/courier` and
`/profiles/{user_id}` the way Courier does (see [the stand-in's
page][the-local-courier-stand-in-courier_analyticsdevserver]), keeps what it received for
inspection (`/__dev/*`, a Data Logs page at `/`) and can inject faults. Needs the `dev` extra
(`pip install -e '.[dev]'` in a clone of the repository).

```python
from courier_analytics.devserver import DevServer, Faults

with DevServer(mappings={"Order Completed": "tmpl_order"}) as server:
    ...  # point the client at server.base_url with server.api_key
```
"""

from __future__ import annotations

#: What the `dev` extra installs that the stand-in imports.
_DEV_EXTRA = frozenset({"uvicorn", "httptools", "uvloop", "jsonpatch", "jsonpointer"})

try:
    from courier_analytics.devserver._app import DevApp, create_app
    from courier_analytics.devserver._cli import add_arguments, faults_from_args, load_mappings, run
    from courier_analytics.devserver._faults import FaultAction, Faults
    from courier_analytics.devserver._server import DevServer, serve
    from courier_analytics.devserver._state import DevState
except ModuleNotFoundError as exc:
    # Name the extra: a bare "No module named 'jsonpatch'" does not say what to install.
    if (exc.name or "").partition(".")[0] not in _DEV_EXTRA:
        raise
    raise ModuleNotFoundError(
        f"the local Courier stand-in (courier_analytics.devserver) needs the [dev] extra, "
        f"and {exc.name} is missing: pip install 'courier-analytics[dev]' "
        "(or pip install -e '.[dev]' in a clone)",
        name=exc.name,
    ) from exc

__all__ = [
    "DevApp",
    "DevServer",
    "DevState",
    "FaultAction",
    "Faults",
    "add_arguments",
    "create_app",
    "faults_from_args",
    "load_mappings",
    "run",
    "serve",
]
