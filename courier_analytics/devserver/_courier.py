"""What Courier does with each request, per its API reference and Segment integration.

Pure request -> `Answer` functions over a `DevState`. The caller holds
`state.lock`; nothing here does I/O or waits.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any

import orjson

from courier_analytics.devserver._patch import PatchError, apply_patch
from courier_analytics.devserver._state import SEGMENT_PREFIX, Answer, DevState

JSON_HEADERS = ((b"content-type", b"application/json"),)
INVALID_JSON: Any = object()  # marks a body that is not JSON


def json_answer(status: int, body: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    """An answer with a JSON body."""
    return Answer(status, bytes(memoryview(orjson.dumps(body))), headers)  # exact size


def error(status: int, message: str, kind: str = "invalid_request_error") -> Answer:
    """An answer with Courier's error body."""
    return json_answer(status, {"message": message, "type": kind})


def invalid(message: str) -> Answer:
    """A 400 with Courier's `invalid_request_error` body."""
    return error(400, message)


UNAUTHORIZED = error(401, "Unauthorized", "authentication_error")
NOT_FOUND = error(404, "Not Found")
TOO_LARGE = error(413, "Request Entity Too Large: the limit is 6 MB")
ACCEPTED_STATUS = json_answer(200, {"status": "SUCCESS"})
NO_CONTENT = Answer(204, b"")


def is_authorized(state: DevState, authorization: bytes | None) -> bool:
    """Whether an `Authorization` header value carries an accepted bearer key."""
    if not authorization:
        return False
    scheme, _, key = authorization.partition(b" ")
    key = key.strip()
    if scheme.lower() != b"bearer" or not key:
        return False
    if state.accept_any_key:
        return True
    return hmac.compare_digest(key, state.api_key.encode())


# -- shared pieces ----------------------------------------------------------


def _user_of(message: dict[str, Any]) -> str | Answer:
    """`userId`, else `anonymousId`; an `Answer` (400) when neither is usable."""
    for field in ("userId", "anonymousId"):
        value = message.get(field)
        if value is not None and not isinstance(value, str):
            return invalid(f"{field} must be a string")
    user = message.get("userId") or message.get("anonymousId")
    if not user:
        return invalid("userId or anonymousId is required")
    return str(user)


def _object_field(
    message: dict[str, Any], field: str, *, required: bool
) -> dict[str, Any] | Answer:
    value = message.get(field)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        return invalid(f"{field} must be an object" if field in message else f"{field} is required")
    return value


def _string_field(message: dict[str, Any], field: str) -> str | Answer:
    value = message.get(field)
    if not isinstance(value, str) or not value:
        return invalid(
            f"{field} must be a non-empty string" if field in message else f"{field} is required"
        )
    return value


def merge_profile(state: DevState, user_id: str, changes: dict[str, Any]) -> None:
    """Shallow-merge `changes` into a profile (creating it); `None` removes a key."""
    profile = dict(state.profiles_by_id.get(user_id, {}))
    for key, value in changes.items():
        if value is None:
            profile.pop(key, None)
        else:
            profile[key] = value
    state.profiles_by_id[user_id] = profile


def _make_send(
    state: DevState,
    *,
    template: str,
    user: str | None,
    properties: dict[str, Any],
    data: Any,
) -> dict[str, Any]:
    """The send a mapped event makes: to the user, a list / list pattern, or no one."""
    courier = properties.get("courier")
    courier = courier if isinstance(courier, dict) else {}
    if isinstance(courier.get("list"), str):
        kind, recipient, profile = "list", courier["list"], None
    elif isinstance(courier.get("pattern"), str):
        kind, recipient, profile = "list_pattern", courier["pattern"], None
    elif user is None:
        kind, recipient, profile = "none", None, None
    else:
        kind, recipient, profile = "user", user, state.profiles_by_id.get(user)
    return {
        "kind": kind,
        "recipient": recipient,
        "user": user,
        "template": template,
        "profile": profile,
        "data": data,
    }


def _log_duplicate(state: DevState, route: str, message: dict[str, Any], message_id: str) -> None:
    state.duplicates += 1
    user = message.get("userId") or message.get("anonymousId")
    state.log_event(
        route=route,
        type=message.get("type"),
        messageId=message_id,
        user=user if isinstance(user, str) else None,
        event=message.get("event") if isinstance(message.get("event"), str) else None,
        status="Duplicate",
        data=message,
        send=None,
    )


# -- route 1: POST /inbound/segment -------------------------------------------


def inbound_segment(state: DevState, message: Any) -> Answer:
    """Handle one Segment-spec message the way Courier's Segment endpoint does."""
    if not isinstance(message, dict):
        return invalid("the body must be a JSON object (one Segment message)")
    message_id = message.get("messageId")
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        return invalid("messageId must be a non-empty string")
    seen = None if message_id is None else state.segment_answers.get(message_id)
    if message_id is not None and seen is not None:
        _log_duplicate(state, "segment", message, message_id)
        return seen
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        return invalid("type is required")
    handler = _SEGMENT_HANDLERS.get(kind)
    if handler is None:
        return json_answer(501, {"message": f"Event Type Unsupported: {kind}"})
    message_id = message_id or uuid.uuid4().hex
    answer = handler(state, message, message_id)
    if answer.status == 202:
        state.segment_answers.add(message_id, answer)
        state.message_ids_applied += 1
    return answer


def _segment_identify(state: DevState, message: dict[str, Any], message_id: str) -> Answer:
    traits = _object_field(message, "traits", required=True)
    if isinstance(traits, Answer):
        return traits
    user = _user_of(message)
    if isinstance(user, Answer):
        return user
    merge_profile(state, user, traits)
    state.log_event(
        route="segment",
        type="identify",
        messageId=message_id,
        user=user,
        event=None,
        status="Accepted",
        data=message,
        send=None,
    )
    return json_answer(202, {"messageId": message_id})


def _segment_track(state: DevState, message: dict[str, Any], message_id: str) -> Answer:
    event = _string_field(message, "event")
    if isinstance(event, Answer):
        return event
    user = _user_of(message)
    if isinstance(user, Answer):
        return user
    properties = _object_field(message, "properties", required=False)
    if isinstance(properties, Answer):
        return properties
    name = SEGMENT_PREFIX + event
    template = state.template_for(name, event)
    send = None
    if template is not None:
        send = _make_send(state, template=template, user=user, properties=properties, data=message)
        send["messageId"] = message_id
        send["event"] = name
    state.log_event(
        route="segment",
        type="track",
        messageId=message_id,
        user=user,
        event=name,
        status="Unmapped" if template is None else "Mapped",
        data=message,
        send=send,
    )
    return json_answer(202, {"messageId": message_id})


def _segment_group(state: DevState, message: dict[str, Any], message_id: str) -> Answer:
    traits = _object_field(message, "traits", required=True)
    if isinstance(traits, Answer):
        return traits
    group_id = _string_field(message, "groupId")
    if isinstance(group_id, Answer):
        return group_id
    user = _user_of(message)
    if isinstance(user, Answer):
        return user
    state.log_event(
        route="segment",
        type="group",
        messageId=message_id,
        user=user,
        event=None,
        status="Accepted",
        data=message,
        send=None,
    )
    return json_answer(202, {"messageId": message_id})


_SEGMENT_HANDLERS = {
    "identify": _segment_identify,
    "track": _segment_track,
    "group": _segment_group,
}


# -- route 2: POST /inbound/courier --------------------------------------------


def inbound_courier(state: DevState, message: Any) -> Answer:
    """Handle one track call on Courier's documented inbound endpoint."""
    if not isinstance(message, dict):
        return invalid("the body must be a JSON object")
    message_id = _string_field(message, "messageId")
    if isinstance(message_id, Answer):
        return message_id
    if message_id in state.courier_message_ids:
        _log_duplicate(state, "courier", message, message_id)
        return error(409, "Conflict: this messageId was already received")
    # userId is optional, as in Courier's OpenAPI description of this endpoint (a
    # track without it is accepted; a mapped one then has no recipient of its own).
    for field in ("event", "userId") if "userId" in message else ("event",):
        checked = _string_field(message, field)
        if isinstance(checked, Answer):
            return checked
    if message.get("type") != "track":
        return invalid('type must be "track"')
    properties = _object_field(message, "properties", required=False)
    if isinstance(properties, Answer):
        return properties
    event, user = message["event"], message.get("userId")
    # An event named as the Segment integration names it maps by its short name too.
    template = state.template_for(event, event.removeprefix(SEGMENT_PREFIX))
    send = None
    if template is not None:
        send = _make_send(
            state, template=template, user=user, properties=properties, data=properties
        )
        send["messageId"] = message_id
        send["event"] = event
    state.courier_message_ids.add(message_id, True)
    state.message_ids_applied += 1
    state.log_event(
        route="courier",
        type="track",
        messageId=message_id,
        user=user,
        event=event,
        status="Unmapped" if template is None else "Mapped",
        data=message,
        send=send,
    )
    return json_answer(202, {"messageId": message_id})


# -- /profiles/{user_id} ----------------------------------------------------------


def profiles(state: DevState, method: str, user_id: str, body: Any) -> Answer:
    """Handle `GET/POST/PUT/PATCH/DELETE /profiles/{user_id}`."""
    if method == "GET":
        profile = state.profiles_by_id.get(user_id)
        return NOT_FOUND if profile is None else json_answer(200, {"profile": profile})
    if method == "DELETE":
        if state.profiles_by_id.pop(user_id, None) is not None:
            _log_profile(state, "profile.delete", user_id, None)
        return NO_CONTENT
    if not isinstance(body, dict):
        return invalid("the body must be a JSON object")
    if method == "PATCH":
        return _patch_profile(state, user_id, body)
    changes = _object_field(body, "profile", required=True)
    if isinstance(changes, Answer):
        return changes
    if method == "PUT":
        state.profiles_by_id[user_id] = {}
    merge_profile(state, user_id, changes)
    _log_profile(state, "profile.replace" if method == "PUT" else "profile.merge", user_id, body)
    return ACCEPTED_STATUS


def _patch_profile(state: DevState, user_id: str, body: dict[str, Any]) -> Answer:
    current = state.profiles_by_id.get(user_id)
    if current is None:
        return NOT_FOUND
    try:
        patched = apply_patch(current, body.get("patch"))
    except PatchError as exc:
        return invalid(str(exc))
    if not isinstance(patched, dict):
        return invalid("the patched profile must stay an object")
    state.profiles_by_id[user_id] = patched
    _log_profile(state, "profile.patch", user_id, body)
    return ACCEPTED_STATUS


def _log_profile(state: DevState, kind: str, user_id: str, body: Any) -> None:
    state.log_event(
        route="profiles",
        type=kind,
        messageId=None,
        user=user_id,
        event=None,
        status="Accepted",
        data=body,
        send=None,
    )
