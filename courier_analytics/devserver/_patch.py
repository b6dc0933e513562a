"""RFC 6902 JSON Patch for `PATCH /profiles/{user_id}`, done by the `jsonpatch` package.

`apply_patch` patches a deep copy and returns it, so a failing patch leaves the
original untouched, and turns every way a patch can fail into `PatchError`.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer


class PatchError(ValueError):
    """A patch that is malformed or cannot be applied; the message says why."""


def apply_patch(document: Any, operations: Any) -> Any:
    """Apply RFC 6902 `operations` to a copy of `document` and return the copy.

    Raises:
        PatchError: The patch is malformed, a path is missing, or a `test` failed.
    """
    if not isinstance(operations, list):
        raise PatchError("patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(document, operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(f"the patch cannot be applied: {exc}") from None
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        # An operation of the wrong shape (not an object, a path that is not a str).
        raise PatchError(f"the patch is malformed: {exc}") from None
