"""Fixtures: a Courier stand-in on 127.0.0.1 for the spool's process tests."""

from tests._spool_helpers import KEY, _clean, server

__all__ = ["KEY", "_clean", "server"]
