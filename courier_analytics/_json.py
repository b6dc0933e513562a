"""JSON encoding of messages: one orjson call that is both snapshot and validation.

Encoding happens in the caller's thread at the moment of the call, so the bytes
queued are a snapshot (mutating the caller's dicts afterwards changes nothing)
and a value that cannot become JSON raises there, naming its key path.

What non-JSON-native values become:

| value | JSON |
|---|---|
| `datetime`, `date`, `time` (and subclasses) | ISO 8601 (UTC as `+00:00`; naive stays naive) |
| `Decimal` | number (`float`); NaN/infinite -> `null` |
| `float` NaN, `inf`, `-inf` | `null` (JSON has no such numbers; as `JSON.stringify`) |
| `UUID` | its canonical string |
| `Enum` | its value |
| `tuple`, `list`, `set`, `frozenset`, other sequences (`deque`, ...) | array |
| `dict` and other mappings | object |
| dataclass, attrs, pydantic, the package's own values (`User`) | object of its fields |
| `bytes`, `bytearray`, `memoryview` | string, decoded as UTF-8 (other bytes: `TypeError`) |
| objects with `tolist()` (numpy) | what `tolist()` returns |
| keys `int`, `float`, `bool`, `None`, `datetime`, `UUID`, `Enum` | as `json.dumps`: `1` -> `"1"` |

Anything else raises `TypeError` or `ValueError` naming the key
path, e.g. `properties['cart']['items'][2]`: generators and iterators (which
would be consumed), arbitrary objects, an `Enum` whose value is one of those,
keys of other types, two keys that become the same JSON key (`1` and `"1"`:
the receiver would keep only one), integers beyond 64 bits, strings with lone
surrogates, reference cycles, nesting deeper than 250 levels, a `datetime`
whose `tzinfo` gives no valid UTC offset (its `utcoffset()` fails or is
beyond +-24 h) and a `time` with a `tzinfo`.

orjson does the work; only what it cannot check is checked in Python, and only
when it can occur: datetimes reach `_default` (`OPT_PASSTHROUGH_DATETIME`,
orjson would call a broken `utcoffset()` unchecked and crash the process), and
the walk that names a problem runs only after orjson refused the message or
found a key that is not a str.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, NoReturn

import orjson

from courier_analytics._value import Value

__all__ = [
    "MAX_DEPTH",
    "dumps",
    "encode_datetime",
    "encode_field",
    "encode_timestamp",
    "loads",
]

#: Deepest nesting accepted (orjson's own limit is 254 levels; the message envelope
#: uses a few of them).
MAX_DEPTH = 250

_DATETIME_OPTIONS = 0  # UTC as `+00:00`, as isoformat() and Segment's library write it
_OPTIONS = _DATETIME_OPTIONS | orjson.OPT_PASSTHROUGH_DATETIME
_OPTIONS_NON_STR_KEYS = _OPTIONS | orjson.OPT_NON_STR_KEYS
_KEY_SCALARS = (str, int, float, bool, type(None))
_KEY_TYPES = (*_KEY_SCALARS, _dt.datetime, _dt.date, _dt.time, enum.Enum, uuid.UUID)
_NATIVE_LEAVES = (uuid.UUID, bool, float, orjson.Fragment)
#: Path segments shown at each end of a long key path (the middle is elided).
_PATH_ENDS = 6

loads = orjson.loads


class _Problem(Exception):
    """A value found to be unencodable while walking; carries where and what."""

    def __init__(self, path: _Path, error: TypeError | ValueError) -> None:
        super().__init__(path, error)
        self.path = path
        self.error = error


#: A key path as a linked list, (parent, segment), so walking costs no copies.
_Path = tuple["_Path", object] | None


class _Attribute(str):
    """A path segment that is an attribute (`.value` of an Enum member), not a key."""


def _plain_datetime(value: _dt.datetime) -> _dt.datetime:
    """`value` as a plain datetime with a fixed offset; TypeError if it has no valid one."""
    try:
        offset = value.utcoffset()  # Python checks the type and the +-24 h range
    except Exception as exc:
        raise TypeError(
            f"the datetime's tzinfo ({type(value.tzinfo).__name__}) gives no valid UTC offset "
            f"({type(exc).__name__}: {exc}); use a zoneinfo.ZoneInfo or datetime.timezone"
        ) from None
    tz = None if offset is None else _dt.timezone(offset)
    date = (value.year, value.month, value.day)
    time = (value.hour, value.minute, value.second, value.microsecond)
    return _dt.datetime(*date, *time, tz, fold=value.fold)  # plain, even from a subclass


def encode_datetime(value: _dt.datetime) -> orjson.Fragment:
    """`value` encoded as JSON now, as a fragment to put in a message.

    Raises:
        TypeError: its `tzinfo` gives no valid UTC offset.
    """
    tz = value.tzinfo
    if type(value) is not _dt.datetime or not (tz is None or type(tz) is _dt.timezone):
        value = _plain_datetime(value)  # stdlib fixed offsets are always valid
    return orjson.Fragment(orjson.dumps(value, option=_DATETIME_OPTIONS))


def encode_timestamp(value: _dt.datetime) -> orjson.Fragment:
    """An aware UTC datetime as a message's `timestamp`: `2026-03-04T05:06:07.089+00:00`.

    Milliseconds and `+00:00`, as Segment's library writes it (`isoformat(timespec=
    "milliseconds")`), cut from orjson's encoding, which is several times faster.
    """
    raw = orjson.dumps(value)  # b'"2026-03-04T05:06:07.089123+00:00"', or no fraction
    if raw[20] == 0x2E:  # "."
        return orjson.Fragment(raw[:24] + b'+00:00"')
    return orjson.Fragment(raw[:20] + b'.000+00:00"')


def _default(obj: Any) -> Any:
    """Turn a value orjson does not know into one it does (see the module docstring)."""
    if isinstance(obj, _dt.datetime):
        return encode_datetime(obj)
    if isinstance(obj, _dt.date):
        return orjson.Fragment(orjson.dumps(_dt.date(obj.year, obj.month, obj.day)))
    if isinstance(obj, _dt.time):
        if obj.tzinfo is not None:
            raise TypeError(
                "a datetime.time with a tzinfo cannot become JSON (its UTC offset depends on "
                "the date); pass a datetime, or a time without tzinfo"
            )
        plain = _dt.time(obj.hour, obj.minute, obj.second, obj.microsecond)
        return orjson.Fragment(orjson.dumps(plain))
    # A Decimal exists only once `decimal` is imported: not importing it here spares
    # every process that never uses one its import.
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(obj, decimal.Decimal):
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
    # An attrs instance means attrs is loaded: asking costs no import of it here.
    attr = sys.modules.get("attr")
    if attr is not None and attr.has(type(obj)):
        return dict(attr.asdict(obj, recurse=False))
    if isinstance(obj, Value):  # the package's own values (a Stats, a User)
        return dict(zip(obj.__match_args__, obj._fields(), strict=True))
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
        TypeError: a value or key of a type that cannot become JSON, or a datetime
            without a valid UTC offset; the message names its key path.
        ValueError: a cycle, excessive nesting, an out-of-range integer, an invalid
            string or two keys that become the same JSON key; the message names
            its key path.
    """
    # orjson's result keeps a ~4 KB allocation whatever the JSON's length; a queued
    # message lives a while, so keep an exact-size copy (0.2 us; 100,000 queued
    # messages: 400 MB -> 40 MB).
    try:
        return bytes(memoryview(orjson.dumps(obj, default=_default, option=_OPTIONS)))
    except (orjson.JSONEncodeError, RecursionError):
        pass
    # Rarely needed, and slower for every dict: only after the fast path failed.
    try:
        encoded = orjson.dumps(obj, default=_default, option=_OPTIONS_NON_STR_KEYS)
    except Exception as exc:  # a key's tzinfo may raise anything
        _raise_problem(obj, exc)
    # orjson writes 1 and "1" as two equal keys; the receiver would keep one. Decoding
    # merges such keys, so the JSON re-encoded comes out shorter: a check in C that
    # leaves the walk (which names the dict) to the messages that have them.
    if len(orjson.dumps(orjson.loads(encoded))) != len(encoded):
        try:
            _check_duplicate_keys(obj)
        except _Problem as problem:
            _raise(problem)
    return bytes(memoryview(encoded))


def encode_field(name: str, value: Any) -> bytes:
    """`value` encoded as `dumps` would encode it as the field `name` of a message.

    The same checks, at the same depth, and an error names the key path from
    `name` (e.g. `properties['cart']`); `name` must be a plain ASCII key. The
    result is an exact-size copy, fit to be queued.
    """
    try:
        # In a list: as deep as in the message, and the slice is the exact-size copy.
        return orjson.dumps([value], default=_default, option=_OPTIONS)[1:-1]
    except (orjson.JSONEncodeError, RecursionError):
        pass
    return dumps({name: value})[len(name) + 4 : -1]  # raises naming the path, if it must


def _raise_problem(obj: Any, exc: Exception) -> NoReturn:
    """Raise the first problem the walk finds in `obj`, else one citing `exc`."""
    try:
        _walk(obj)
    except _Problem as problem:
        _raise(problem)
    raise TypeError(f"the message cannot become JSON: {exc}") from exc


def _raise(problem: _Problem) -> NoReturn:
    where = _format_path(problem.path) or "the message"
    raise type(problem.error)(f"{where}: {problem.error}") from None


def _format_path(path: _Path) -> str:
    segments: list[object] = []
    while path is not None:
        path, segment = path
        segments.append(segment)
    segments.reverse()
    if not segments:
        return ""
    parts = [
        f".{segment}" if isinstance(segment, _Attribute) else f"[{segment!r}]"
        for segment in segments[1:]
    ]
    if len(parts) > 2 * _PATH_ENDS:
        elided = len(parts) - 2 * _PATH_ENDS
        parts[_PATH_ENDS:-_PATH_ENDS] = [f"...({elided} more levels)..."]
    return str(segments[0]) + "".join(parts)


_LEAVE = object()  # on the walk's stack: the container below it is done


def _walk(root: Any) -> None:
    """Walk `root` as orjson would; raise `_Problem` at the first bad part.

    Iterative, so no nesting (however deep, however deep the caller's own stack)
    can raise RecursionError.
    """
    ancestors: set[int] = set()
    stack: list[tuple[Any, _Path, int]] = [(root, None, 0)]
    while stack:
        value, path, depth = stack.pop()
        if value is _LEAVE:
            ancestors.discard(depth)
            continue
        if depth > MAX_DEPTH:
            raise _Problem(path, ValueError(f"nesting is deeper than {MAX_DEPTH} levels"))
        if value is None or isinstance(value, _NATIVE_LEAVES):
            continue
        if isinstance(value, int):
            _check_int(value, path)
        elif isinstance(value, str):
            _check_str(value, path)
        elif isinstance(value, enum.Enum):
            stack.append((value.value, (path, _Attribute("value")), depth + 1))
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in ancestors:
                raise _Problem(path, ValueError("the value contains itself (a reference cycle)"))
            ancestors.add(id(value))
            stack.append((_LEAVE, None, id(value)))
            if isinstance(value, dict):
                _check_keys(value, path)
                children = [(item, (path, key), depth + 1) for key, item in value.items()]
            else:
                children = [(item, (path, index), depth + 1) for index, item in enumerate(value)]
            stack.extend(reversed(children))
        else:
            try:
                converted = _default(value)
            except TypeError as exc:
                raise _Problem(path, exc) from None
            stack.append((converted, path, depth + 1))


def _check_keys(value: dict[Any, Any], path: _Path) -> None:
    """Each key can become a JSON key, and no two become the same one."""
    all_str = True
    for key in value:
        if isinstance(key, str):
            _check_str(key, (path, key))
            continue
        all_str = False
        where = (path, key)
        if not isinstance(key, _KEY_TYPES):
            raise _Problem(
                where,
                TypeError(
                    f"a key of type {type(key).__name__} cannot become a JSON key; use str keys"
                ),
            )
        if isinstance(key, int):
            _check_int(key, where)
        elif isinstance(key, (_dt.datetime, _dt.time)):
            try:
                _default(key)
            except TypeError as exc:
                raise _Problem(where, exc) from None
    if all_str:
        return
    seen: dict[str, object] = {}
    for key in value:
        text = _json_key(key, (path, key))
        if text in seen:
            raise _Problem(
                path,
                ValueError(
                    f"the keys {seen[text]!r} and {key!r} both become the JSON key {text!r}; "
                    "the receiver would keep only one"
                ),
            )
        seen[text] = key


def _json_key(key: object, where: _Path) -> str:
    if isinstance(key, str):
        return key
    try:
        (text,) = orjson.loads(orjson.dumps({key: 0}, option=_OPTIONS_NON_STR_KEYS))
    except Exception as exc:  # a key's tzinfo may raise anything
        raise _Problem(where, TypeError(f"the key cannot become a JSON key: {exc}")) from None
    return str(text)


_SCALARS = (str, int, float, _dt.date, _dt.time, uuid.UUID, orjson.Fragment, type(None))


def _check_duplicate_keys(root: Any) -> None:
    """Raise `_Problem` at a dict whose keys become the same JSON key twice.

    Runs only after orjson encoded `root` with non-str keys, so `root` has no
    cycle, excessive nesting or unencodable value: only containers need a look.
    """
    stack: list[tuple[Any, _Path]] = [(root, None)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key in value:
                if type(key) is not str:
                    keys = orjson.dumps(dict.fromkeys(value, 0), option=_OPTIONS_NON_STR_KEYS)
                    if len(orjson.loads(keys)) < len(value):
                        _check_keys(value, path)  # names the two keys
                    break
            for key, item in value.items():
                if not isinstance(item, _SCALARS):
                    stack.append((item, (path, key)))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                if not isinstance(item, _SCALARS):
                    stack.append((item, (path, index)))
        elif isinstance(value, enum.Enum):
            stack.append((value.value, (path, _Attribute("value"))))
        elif not isinstance(value, _SCALARS):
            stack.append((_default(value), path))


def _check_int(value: int, path: _Path) -> None:
    if not -(2**63) <= value < 2**64:
        raise _Problem(
            path, ValueError("an integer beyond 64 bits cannot be sent; pass it as a str")
        )


def _check_str(value: str, path: _Path) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Problem(
            path, ValueError("the string is not valid Unicode (it has a lone surrogate)")
        ) from None
