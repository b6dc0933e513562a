"""The package's values (Options, RetryPolicy, Stats, FlushReport, MessageView, User):
frozen, compared and hashed by their fields, pickled and copied whole."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from courier_analytics import FlushReport, Options, RetryPolicy, User


def test_assigning_or_deleting_a_field_raises_frozen_instance_error() -> None:
    """A value refuses assignment and deletion with FrozenInstanceError, an AttributeError."""
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_retries = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del policy.jitter


def test_values_with_equal_fields_are_equal_and_hash_alike() -> None:
    """Equality and hash follow the fields; another class with the same fields differs."""
    assert RetryPolicy(max_retries=2) == RetryPolicy(max_retries=2)
    assert hash(RetryPolicy(max_retries=2)) == hash(RetryPolicy(max_retries=2))
    assert RetryPolicy(max_retries=2) != RetryPolicy(max_retries=3)
    assert FlushReport(True, 1, 0, 0, 0) != (True, 1, 0, 0, 0)


def test_repr_names_each_field_in_order() -> None:
    """repr() shows the fields in their order, as a dataclass's does."""
    assert repr(User("u1", None, {"plan": "pro"})) == (
        "User(id='u1', anonymous_id=None, traits={'plan': 'pro'})"
    )


def test_a_value_matches_its_fields_by_position() -> None:
    """`case FlushReport(done, delivered, ...)` matches the fields in order."""
    match FlushReport(True, 3, 0, 0, 0):
        case FlushReport(done, delivered):
            assert (done, delivered) == (True, 3)
        case _:
            pytest.fail("no match")


@pytest.mark.parametrize("clone", [copy.copy, lambda v: pickle.loads(pickle.dumps(v))])
def test_options_copied_or_pickled_keep_what_they_resolved(clone: object) -> None:
    """A copied or unpickled Options equals the original, with its resolved key and URL."""
    options = Options(api_key="key-1", base_url="http://127.0.0.1:9")
    cloned = clone(options)  # type: ignore[operator]
    assert cloned == options
    assert cloned.resolved_api_key() == "key-1"
    assert cloned.resolved_base_url() == "http://127.0.0.1:9"


def test_a_keyword_only_value_unpickles() -> None:
    """RetryPolicy, whose fields are keywords only, comes back from pickle equal."""
    policy = RetryPolicy(max_retries=1, max_time=None)
    assert pickle.loads(pickle.dumps(policy)) == policy
