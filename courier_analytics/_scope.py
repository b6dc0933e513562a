"""Request-scoped identity: who the calls made inside a request are about.

A browser has one user; a backend serves many at once. So the "current user" of
analytics.js lives here in a `contextvars` scope, opened per request (by a
framework integration) or by hand with [`scope`][courier_analytics.scope]. Outside every scope
nothing is remembered.

The context variable holds a small mutable *frame*: an `identify()` anywhere in
the request (another task created inside it, or a thread running a copy of its
context) updates the one frame, and the next call in the request sees the user.
Each state of a frame is an immutable value swapped whole, so readers never need
a lock.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, NamedTuple, TypeVar, cast

from courier_analytics._messages import _id as check_id
from courier_analytics._messages import _mapping as check_mapping
from courier_analytics._value import Value

__all__ = ["MissingIdentity", "User", "current_frame", "reset", "scope", "user"]

MissingIdentity = Literal["raise", "skip"]

_MISSING_IDENTITY: Final = ("raise", "skip")

F = TypeVar("F", bound=Callable[..., Any])

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


class User(Value):
    """Who the current scope's calls are about; see [`user()`][courier_analytics.user].

    Attributes:
        id: The user id (`userId`), or `None` before anyone is identified.
        anonymous_id: The anonymous id (`anonymousId`), or `None`.
        traits: A copy of the traits identified so far in this scope.
    """

    __match_args__ = ("id", "anonymous_id", "traits")
    __slots__ = __match_args__

    id: str | None
    anonymous_id: str | None
    traits: Mapping[str, Any]

    def __init__(
        self, id: str | None, anonymous_id: str | None, traits: Mapping[str, Any] | None = None
    ) -> None:
        self._assign(id, anonymous_id, {} if traits is None else traits)


class _State(NamedTuple):
    """One immutable state of a frame; its dicts are never modified after creation."""

    user_id: str | None = None
    anonymous_id: str | None = None
    traits: Mapping[str, Any] = _EMPTY
    context: Mapping[str, Any] = _EMPTY
    on_missing_identity: MissingIdentity = "raise"


#: The state outside every scope: nothing known.
_ROOT: Final = _State()


class Frame:
    """The current scope's state, swapped whole on each change (identify, reset).

    It also knows the `scope` object that opened it and the context variable's
    token to restore what was there before, so that one scope object may be
    entered by many tasks or threads at once.
    """

    __slots__ = ("owner", "state", "token")

    def __init__(self, state: _State) -> None:
        self.state = state
        self.owner: object = None
        self.token: contextvars.Token[Frame | None] | None = None

    def fill(
        self, user_id: object, anonymous_id: object, context: object
    ) -> tuple[object, object, object]:
        """A call's ids and context with the scope's filled in where the call gives none.

        Explicit ids win whole: a call naming a user or anonymous id is about exactly
        those ids. The call's own `context` keys win over the scope's.
        """
        if user_id is None and anonymous_id is None:
            state = self.state
            user_id, anonymous_id = state.user_id, state.anonymous_id
        return user_id, anonymous_id, self.context(context)

    def context(self, context: object) -> object:
        """A call's `context` over the scope's (the call's keys win)."""
        scoped = self.state.context
        if not scoped:
            return context
        if context is None:
            return scoped
        given = check_mapping("context", context)
        return {**scoped, **given} if given else scoped

    @property
    def skips_anonymous_calls(self) -> bool:
        """Whether a call with no user and no anonymous id is skipped instead of raising."""
        return self.state.on_missing_identity == "skip"

    def identify(
        self, user_id: object, anonymous_id: object, traits: object
    ) -> tuple[_State, Mapping[str, Any] | None]:
        """The state after `identify(user_id, traits, anonymous_id=...)`, and the traits to send.

        As analytics.js: identifying the same user (or the first one) merges the
        traits into the scope's; identifying another user starts their traits afresh.
        The anonymous id is kept unless the call gives one. Not applied yet: the
        caller commits it once the message is made.
        """
        uid = check_id("user_id", user_id)
        aid = check_id("anonymous_id", anonymous_id)
        given = check_mapping("traits", traits)
        state = self.state
        same_user = uid is None or state.user_id is None or uid == state.user_id
        merged: Mapping[str, Any]
        if same_user and state.traits:
            merged = {**state.traits, **given} if given else state.traits
        else:
            merged = dict(given) if given else _EMPTY
        new = state._replace(
            user_id=uid if uid is not None else state.user_id,
            anonymous_id=aid if aid is not None else state.anonymous_id,
            traits=merged,
        )
        return new, (merged or given)

    def user(self) -> User:
        state = self.state
        return User(state.user_id, state.anonymous_id, dict(state.traits))

    def reset(self) -> None:
        self.state = self.state._replace(user_id=None, anonymous_id=None, traits=_EMPTY)


_current: Final[contextvars.ContextVar[Frame | None]] = contextvars.ContextVar(
    "courier_analytics_scope", default=None
)

#: The current scope's frame, or `None` outside every scope (the call path's one lookup).
current_frame: Final = _current.get

# Commits of identify() are read-modify-write; two threads sharing a frame take turns.
_commit_lock = threading.Lock()


def commit(frame: Frame, before: _State, after: _State, identify: tuple[object, ...]) -> None:
    """Apply an identify() to `frame` once its message is made.

    If another change to the scope landed meanwhile (a thread sharing the frame),
    the identify is applied again on top of it, as if it had come second.
    """
    with _commit_lock:
        if frame.state is not before:
            after, _ = frame.identify(*identify)
        frame.state = after


class scope:  # lower case: used like a function, `with analytics.scope(...)`
    """Open a request scope: the user that calls made inside it are about.

    Use it as a context manager or as a decorator of a sync or async function
    (each call of the function opens its own scope). Inside, `identify`, `track`
    and the other calls take the scope's ids when they give none, `identify`
    remembers the user for the rest of the scope, and `user()` / `reset()` read
    and forget it, as in analytics.js:

    ```python
    import courier_analytics as analytics

    with analytics.scope(anonymous_id="anon-9", context={"ip": "203.0.113.7"}):
        analytics.identify("user_123", {"email": "carrier.pigeon@example.com"})
        analytics.track("Login Button Clicked", {"plan": "pro"})  # userId user_123
    ```

    Scopes nest: an inner scope starts from the outer one's values (arguments given
    here replace them; `context` keys are merged, this scope's winning) and leaving
    it restores exactly what was there. A scope is a `contextvars` value: asyncio
    tasks created inside inherit it; other threads and thread pools do not unless
    the app runs them in a copy of the context (`contextvars.copy_context().run`).

    Args:
        user_id: The user the calls are about (`userId`); `None` keeps the outer
            scope's (none at the top).
        anonymous_id: An anonymous id (`anonymousId`), e.g. analytics.js's
            `ajs_anonymous_id` cookie; sent alongside the user id once one is known.
        traits: Traits already known about the user; `identify()` calls merge into them.
        context: Segment `context` fields for every message made in the scope
            (`ip`, `userAgent`, `locale`, `page`...); a call's own `context`
            keys win, and `library` is always this library's.
        on_missing_identity: What a call with no user and no anonymous id (neither
            given nor known to the scope) does: `"raise"` its `ValueError`
            (the default, as outside scopes) or `"skip"` it: counted as skipped in
            `Client.stats`, the reason logged at DEBUG, nothing raised. Framework
            integrations use `"skip"` so that tracking never breaks a view.
            `None` keeps the outer scope's choice.

    Raises:
        TypeError: An id is not a str (or int or UUID), or traits/context is not a mapping.
        ValueError: An id is empty, or `on_missing_identity` is not "raise" or "skip".
    """

    def __init__(
        self,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        on_missing_identity: MissingIdentity | None = None,
    ) -> None:
        if on_missing_identity is not None and on_missing_identity not in _MISSING_IDENTITY:
            raise ValueError(
                f"on_missing_identity must be 'raise' or 'skip' (or None), "
                f"not {on_missing_identity!r}"
            )
        self._user_id = check_id("user_id", user_id)
        self._anonymous_id = check_id("anonymous_id", anonymous_id)
        traits = check_mapping("traits", traits)
        context = check_mapping("context", context)
        # Copies: the caller's dicts may change after the scope opens.
        self._traits = None if traits is None else dict(traits)
        self._context = None if context is None else dict(context)
        self._on_missing_identity = on_missing_identity

    def _state(self, outer: Frame | None) -> _State:
        base = _ROOT if outer is None else outer.state
        user_id = base.user_id if self._user_id is None else self._user_id
        # Another user's traits are not this one's (as analytics.js's identify).
        traits = base.traits if base.user_id is None or user_id == base.user_id else _EMPTY
        if self._traits is not None:
            traits = {**traits, **self._traits}
        context = base.context
        if self._context is not None:
            context = {**context, **self._context}
        return _State(
            user_id,
            base.anonymous_id if self._anonymous_id is None else self._anonymous_id,
            traits,
            context,
            base.on_missing_identity
            if self._on_missing_identity is None
            else self._on_missing_identity,
        )

    def __enter__(self) -> scope:
        frame = Frame(self._state(_current.get()))
        frame.owner = self
        frame.token = _current.set(frame)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The innermost frame this object opened in *this* context: the object may
        # be open in other tasks and threads too, each with a frame of its own.
        frame = _current.get()
        while frame is not None and frame.owner is not self:
            outer = frame.token.old_value if frame.token is not None else None
            frame = outer if isinstance(outer, Frame) else None
        if frame is None or frame.token is None:
            raise RuntimeError("analytics.scope left in a context where it was not entered")
        _current.reset(frame.token)

    def _recreate(self) -> scope:
        again = scope.__new__(scope)
        again.__dict__.update(self.__dict__)
        return again

    def __call__(self, func: F) -> F:
        """Decorate `func` (sync or async): every call of it runs in a scope of its own."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self._recreate():
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._recreate():
                return func(*args, **kwargs)

        return cast(F, run)

    @staticmethod
    def snapshot() -> dict[str, Any] | None:
        """The current scope as a plain dict of this class's arguments; `None` outside scopes.

        Reopen it elsewhere (another thread, a task queue's worker) with
        `analytics.scope(**snapshot)`. It is JSON-compatible when the traits and
        context are, so it can travel in a message's headers:

        ```python
        snapshot = analytics.scope.snapshot()       # in the request
        ...
        with analytics.scope(**snapshot):           # in the worker, at the top level
            analytics.track("Export Finished")      # the request's user
        ```
        """
        frame = _current.get()
        if frame is None:
            return None
        state = frame.state
        return {
            "user_id": state.user_id,
            "anonymous_id": state.anonymous_id,
            "traits": dict(state.traits),
            "context": dict(state.context),
            "on_missing_identity": state.on_missing_identity,
        }


def user() -> User | None:
    """Who the current scope's calls are about (`User`); `None` outside every scope.

    ```python
    with analytics.scope(anonymous_id="anon-9"):
        analytics.identify("user_123", {"plan": "pro"})
        # User(id='user_123', anonymous_id='anon-9', traits={'plan': 'pro'})
        analytics.user()
    ```
    """
    frame = _current.get()
    return None if frame is None else frame.user()


def reset() -> None:
    """Forget the current scope's user, traits and anonymous id (as analytics.js's `reset`).

    Its `context` and `on_missing_identity` stay. Outside every scope there is
    nothing to forget and this does nothing.
    """
    frame = _current.get()
    if frame is not None:
        with _commit_lock:
            frame.reset()
