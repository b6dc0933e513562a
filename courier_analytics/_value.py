"""`Value`: the base of the package's small immutable values (`Stats`, `User`, ...).

A dataclass (or an attrs class) generates its `__init__`, `__eq__`, `__hash__`,
`__repr__` and `__setattr__` as source and compiles them when its module is
imported: about a millisecond a class, paid by every process that imports the
package, most of which never compare or print one. These methods are written once
here, for every class, from its fields (`__match_args__`); each class writes its own typed
`__init__`, which calls `_assign`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

__all__ = ["Value"]

_C = TypeVar("_C")

if TYPE_CHECKING:  # type checkers see each subclass's fields as read-only
    from typing_extensions import dataclass_transform
else:  # Python 3.10's typing has none, and it does nothing at run time

    def dataclass_transform(**_: Any) -> Callable[[_C], _C]:
        return lambda cls: cls


@dataclass_transform(frozen_default=True)
class Value:
    """Equality, hash, repr and pickling from `__match_args__` (the fields, in order); frozen.

    Assigning or deleting an attribute raises `dataclasses.FrozenInstanceError` (an
    `AttributeError`), as a frozen dataclass does.
    """

    __slots__ = ()
    #: The fields, in order: each class sets its own, and `__slots__` to the same.
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def _assign(self, *values: object) -> None:
        """Set the fields, in order (the one way past `__setattr__`)."""
        for name, value in zip(self.__match_args__, values, strict=True):
            object.__setattr__(self, name, value)

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__name__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The fields, not the slots' state, which unpickling would set through
        # __setattr__; and what a class without slots keeps beside them (`Options`
        # keeps what it resolved from the environment), which it writes to __dict__.
        return (_rebuild, (type(self), self._fields()), getattr(self, "__dict__", None))


def _rebuild(cls: type[Value], fields: tuple[Any, ...]) -> Value:
    """A pickled value back, without its `__init__` (some take keywords only)."""
    value = cls.__new__(cls)
    value._assign(*fields)
    return value
