"""JSON encoding of messages: one orjson call that is both snapshot and validation.

Encoding happens in the caller's thread at the moment of the call, so the bytes
queued are a snapshot (mutating the caller's dicts afterwards changes nothing)
and a value that cannot become JSON raises there, naming its key path.

What non-JSON-native values become:

========================================  ==========================================
value                                     JSON
========================================  ==========================================
`datetime` / `date` / `time`        ISO 8601 string (aware UTC datetimes end in `Z`;
                                          naive datetimes are kept naive)
`Decimal`                               number (`float`); NaN/infinite -> `null`
`float` NaN, `inf`, `-inf`          `null` (JSON has no such numbers; as `JSON.stringify`)
`UUID`                                  its canonical string
`Enum`                                  its value
`tuple`, `list`, `set`, `frozenset`,  array (sets in iteration order)
other non-str sequences (`deque`, ...)
`dict` and other mappings               object
dataclass / attrs instance / pydantic     object of its fields
`bytes`, `bytearray`, `memoryview`  string, decoded as UTF-8 (other bytes: `TypeError`)
objects with `tolist()` (numpy)         what `tolist()` returns
keys `int`, `float`, `bool`, `None`,  string keys as `json.dumps` writes them:
`datetime`, `UUID`, `Enum`          `1` -> `"1"`, `True` -> `"true"`
========================================  ==========================================

Anything else (generators and iterators, which would be consumed; arbitrary
objects; keys of other types; integers beyond 64 bits; strings with lone
surrogates; reference cycles; nesting deeper than 250 levels) raises
`TypeError` or `ValueError` naming the key path, e.g.
`properties['cart']['items'][2]`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import uuid
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal
from typing import Any

import attrs
import orjson

__all__ = ["MAX_DEPTH", "dumps", "loads"]

#: Deepest nesting accepted (orjson's own limit is 254 levels; the message envelope
#: uses a few of them).
MAX_DEPTH = 250

_OPTIONS = orjson.OPT_UTC_Z
_OPTIONS_NON_STR_KEYS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
_KEY_TYPES = (str, int, float, bool, type(None), _dt.datetime, _dt.date, _dt.time, enum.Enum,
              uuid.UUID)  # fmt: skip
_NATIVE_LEAVES = (_dt.datetime, _dt.date, _dt.time, uuid.UUID, enum.Enum, bool, float)

loads = orjson.loads


def _default(obj: Any) -> Any:
    """Turn a value orjson does not know into one it does (see the module docstring)."""
    if isinstance(obj, Decimal):
        return float(obj) if obj.is_finite() else None
    if isinstance(obj, (bytes, bytearray, memoryview)):
        try:
            return bytes(obj).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError(
                "bytes that are not UTF-8 text cannot become JSON; encode them first "
                "(for example with base64) and pass a str"
            ) from None
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (AbstractSet, Sequence)) and not isinstance(obj, str):
        return list(obj)
    if isinstance(obj, Iterator):
        raise TypeError(
            f"a {type(obj).__name__} would be consumed by sending it; pass a list instead"
        )
    if attrs.has(type(obj)):
        return attrs.asdict(obj, recurse=False)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    for method in ("model_dump", "tolist"):  # pydantic v2 models, numpy values
        convert = getattr(obj, method, None)
        if callable(convert):
            return convert()
    raise TypeError(
        f"a value of type {type(obj).__name__} cannot become JSON; convert it to a str, "
        "number, bool, None, list or dict"
    )


def dumps(obj: Any) -> bytes:
    """Encode `obj` as compact UTF-8 JSON.

    Raises:
        TypeError: a value or key of a type that cannot become JSON; the message
            names its key path.
        ValueError: a cycle, excessive nesting, an out-of-range integer or an
            invalid string; the message names its key path.
    """
    # orjson's result keeps a ~4 KB allocation whatever the JSON's length; a queued
    # message lives a while, so keep an exact-size copy (0.2 us; 100,000 queued
    # messages: 400 MB -> 40 MB).
    try:
        return bytes(memoryview(orjson.dumps(obj, default=_default, option=_OPTIONS)))
    except orjson.JSONEncodeError:
        pass
    try:  # rarely needed, and slower for every dict: only after the fast path failed
        encoded = orjson.dumps(obj, default=_default, option=_OPTIONS_NON_STR_KEYS)
        return bytes(memoryview(encoded))
    except orjson.JSONEncodeError as exc:
        problem = _find_problem(obj, "", set(), 0)
        if problem is None:  # orjson refused something the walk does not know of
            raise TypeError(f"the message cannot become JSON: {exc}") from exc
        path, error = problem
        where = path or "the message"
        raise type(error)(f"{where}: {error}") from None


def _find_problem(
    value: Any, path: str, ancestors: set[int], depth: int
) -> tuple[str, TypeError | ValueError] | None:
    """Walk `value` as orjson would and name the first part it cannot encode."""
    if depth > MAX_DEPTH:
        return path, ValueError(f"nesting is deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, _NATIVE_LEAVES):
        return None
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return None
        return path, ValueError("an integer beyond 64 bits cannot be sent; pass it as a str")
    if isinstance(value, str):
        return _check_str(value, path)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in ancestors:
            return path, ValueError("the value contains itself (a reference cycle)")
        ancestors.add(id(value))
        try:
            return _find_in_container(value, path, ancestors, depth)
        finally:
            ancestors.discard(id(value))
    try:
        converted = _default(value)
    except TypeError as exc:
        return path, exc
    return _find_problem(converted, path, ancestors, depth + 1)


def _find_in_container(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...],
    path: str,
    ancestors: set[int],
    depth: int,
) -> tuple[str, TypeError | ValueError] | None:
    if isinstance(value, dict):
        for key, item in value.items():
            key_path = f"{path}[{key!r}]" if path else str(key)
            if not isinstance(key, _KEY_TYPES):
                return key_path, TypeError(
                    f"a key of type {type(key).__name__} cannot become a JSON key; use str keys"
                )
            if isinstance(key, str) and (bad := _check_str(key, key_path)):
                return bad
            if isinstance(key, int) and not -(2**63) <= key < 2**64:
                return key_path, ValueError("an integer key beyond 64 bits cannot become JSON")
            if found := _find_problem(item, key_path, ancestors, depth + 1):
                return found
        return None
    for index, item in enumerate(value):
        if found := _find_problem(item, f"{path}[{index}]", ancestors, depth + 1):
            return found
    return None


def _check_str(value: str, path: str) -> tuple[str, ValueError] | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return path, ValueError("the string is not valid Unicode (it has a lone surrogate)")
    return None
