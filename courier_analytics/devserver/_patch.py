"""A small RFC 6902 JSON Patch, enough for `PATCH /profiles/{user_id}`.

Supports `add`, `remove`, `replace`, `move`, `copy` and `test` with
RFC 6901 pointers (`~0` and `~1` escapes, `-` for "after the last array item").
`apply_patch` works on a deep copy and returns it, so a failing patch leaves
the original untouched.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """A patch that is malformed or cannot be applied; the message says why."""


def apply_patch(document: Any, operations: Any) -> Any:
    """Apply RFC 6902 `operations` to a copy of `document` and return the copy.

    Raises:
        PatchError: The patch is malformed, a path is missing, or a `test` failed.
    """
    if not isinstance(operations, list):
        raise PatchError("patch must be a list of operations")
    result = copy.deepcopy(document)
    for index, operation in enumerate(operations):
        try:
            result = _apply_one(result, operation)
        except PatchError as exc:
            raise PatchError(f"patch operation {index}: {exc}") from None
    return result


def _parse_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise PatchError("path must be a string")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"path {pointer!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _array_index(array: list[Any], token: str, *, for_insert: bool) -> int:
    if for_insert and token == "-":
        return len(array)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"{token!r} is not an array index")
    index = int(token)
    limit = len(array) if for_insert else len(array) - 1
    if index > limit:
        raise PatchError(f"array index {index} is out of range")
    return index


def _resolve(document: Any, tokens: list[str]) -> Any:
    node = document
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path member {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_array_index(node, token, for_insert=False)]
        else:
            raise PatchError(f"cannot descend into a scalar at {token!r}")
    return node


def _add(document: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(document, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(parent, last, for_insert=True), value)
    else:
        raise PatchError("the parent of the target is not a container")
    return document


def _remove(document: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _resolve(document, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path member {last!r} does not exist")
        return document, parent.pop(last)
    if isinstance(parent, list):
        return document, parent.pop(_array_index(parent, last, for_insert=False))
    raise PatchError("the parent of the target is not a container")


def _value_of(operation: dict[str, Any]) -> Any:
    if "value" not in operation:
        raise PatchError(f"{operation['op']!r} needs a 'value'")
    return copy.deepcopy(operation["value"])


def _apply_one(document: Any, operation: Any) -> Any:
    if not isinstance(operation, dict) or not isinstance(operation.get("op"), str):
        raise PatchError("each operation must be an object with an 'op' string")
    op = operation["op"]
    tokens = _parse_pointer(operation.get("path"))
    if op == "add":
        return _add(document, tokens, _value_of(operation))
    if op == "remove":
        return _remove(document, tokens)[0]
    if op == "replace":
        _resolve(document, tokens)
        if tokens:
            document, _ = _remove(document, tokens)
        return _add(document, tokens, _value_of(operation))
    if op in ("move", "copy"):
        source = _parse_pointer(operation.get("from"))
        if op == "move" and tokens[: len(source)] == source and tokens != source:
            raise PatchError("cannot move a value into one of its own children")
        if op == "move":
            document, value = _remove(document, source)
        else:
            value = copy.deepcopy(_resolve(document, source))
        return _add(document, tokens, value)
    if op == "test":
        if _resolve(document, tokens) != _value_of(operation):
            raise PatchError(f"test failed at {operation.get('path')!r}")
        return document
    raise PatchError(f"unknown op {op!r}")
