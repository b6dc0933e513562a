"""courier-analytics: Segment-style analytics calls delivered straight to Courier."""

from __future__ import annotations

from courier_analytics._version import __version__

__all__ = ["__version__"]
