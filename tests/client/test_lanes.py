"""Per-user lanes: which messages may go now under each ordering (no threads, no I/O)."""

from __future__ import annotations

import pytest

from courier_analytics._lanes import Lanes
from courier_analytics._messages import Message


def message(kind: str, n: int, user: str = "u1") -> Message:
    """A message of this type for this user; ``n`` names it."""
    return Message(kind, f"{kind}-{n}", user, None, None, b"{}")


def names(messages: list[Message]) -> list[str]:
    return [m.message_id for m in messages]


def make(*, strict: bool = False, per_user: int = 4) -> tuple[Lanes, list[Message]]:
    released: list[Message] = []
    return Lanes(released.append, strict=strict, per_user=per_user), released


def test_one_users_tracks_go_together_up_to_the_cap() -> None:
    """Between barriers, one user's tracks are released together, at most per_user."""
    lanes, released = make(per_user=3)
    tracks = [message("track", n) for n in range(5)]
    for track in tracks:
        lanes.add(track)
    assert names(released) == ["track-0", "track-1", "track-2"]
    lanes.finish(tracks[1])
    assert names(released)[3:] == ["track-3"]


def test_identify_waits_for_earlier_tracks_and_holds_later_ones() -> None:
    """An identify goes once earlier messages are answered; later ones wait for it."""
    lanes, released = make()
    first, identify, after = message("track", 0), message("identify", 1), message("track", 2)
    for m in (first, identify, after):
        lanes.add(m)
    assert released == [first]
    lanes.finish(first)
    assert released == [first, identify]
    lanes.finish(identify)
    assert released == [first, identify, after]


@pytest.mark.parametrize("kind", ["alias", "group"])
def test_alias_and_group_are_barriers_too(kind: str) -> None:
    """alias and group hold back their user's later messages like identify."""
    lanes, released = make()
    barrier, after = message(kind, 0), message("track", 1)
    lanes.add(barrier)
    lanes.add(after)
    assert released == [barrier]
    lanes.finish(barrier)
    assert released == [barrier, after]


def test_strict_ordering_releases_one_message_per_user_at_a_time() -> None:
    """strict: a user's next message goes only when the one before is answered."""
    lanes, released = make(strict=True, per_user=8)
    tracks = [message("track", n) for n in range(3)]
    for track in tracks:
        lanes.add(track)
    assert released == tracks[:1]
    lanes.finish(tracks[0])
    assert released == tracks[:2]


def test_users_do_not_hold_each_other_back() -> None:
    """An unanswered identify of one user does not hold back another user's messages."""
    lanes, released = make()
    lanes.add(message("identify", 0, "a"))
    lanes.add(message("track", 1, "a"))
    lanes.add(message("track", 2, "b"))
    assert names(released) == ["identify-0", "track-2"]


def test_a_track_waiting_to_retry_holds_back_nothing() -> None:
    """A detached track frees its place: later tracks and even an identify go on."""
    lanes, released = make(per_user=1)
    retrying, identify, after = message("track", 0), message("identify", 1), message("track", 2)
    for m in (retrying, identify, after):
        lanes.add(m)
    assert lanes.detach(retrying)
    assert released == [retrying, identify]
    lanes.finish(identify)
    assert released == [retrying, identify, after]
    lanes.finish(retrying)  # the retry ends later: nothing else changes
    lanes.finish(after)
    assert len(lanes) == 0


def test_an_identify_waiting_to_retry_holds_its_user_back() -> None:
    """A barrier is never detached: its user's later messages wait for its retries."""
    lanes, released = make()
    identify, after = message("identify", 0), message("track", 1)
    lanes.add(identify)
    lanes.add(after)
    assert not lanes.detach(identify)
    assert released == [identify]
    lanes.finish(identify)
    assert released == [identify, after]


def test_strict_ordering_never_detaches_a_retry() -> None:
    """strict: a track waiting to retry holds back its user's later messages."""
    lanes, released = make(strict=True)
    retrying, after = message("track", 0), message("track", 1)
    lanes.add(retrying)
    lanes.add(after)
    assert not lanes.detach(retrying)
    assert released == [retrying]


def test_drain_returns_what_was_never_released() -> None:
    """drain() hands back every waiting message and empties the lanes."""
    lanes, _ = make()
    for m in (message("identify", 0), message("track", 1), message("track", 2)):
        lanes.add(m)
    assert names(list(lanes.drain())) == ["track-1", "track-2"]
    assert len(lanes) == 0


def test_a_lane_is_forgotten_once_everything_is_answered() -> None:
    """No lane is kept for a user with nothing waiting or unanswered."""
    lanes, released = make()
    lanes.add(message("track", 0))
    lanes.finish(released[0])
    assert len(lanes) == 0


def test_per_user_must_be_positive() -> None:
    """A per-user cap below 1 is refused."""
    with pytest.raises(ValueError, match="per_user"):
        Lanes(print, strict=False, per_user=0)
