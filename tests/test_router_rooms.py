"""Rooms in the router (``/room``, commands 5-7), without a network.

Join, the members list and presence, leave (command or disconnect), the size
limit, every refusal code of docs/PROTOCOL.md "Rooms", call integrity inside a
room, and room-scoped tokens.
"""

from __future__ import annotations

import pytest

from rtc_signal.proto import Command, decode, encode_response
from rtc_signal.proto.rooms import Presence, parse_presence
from rtc_signal.signaling.router import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    OK,
    Action,
    Forward,
    Frame,
    Path,
    Router,
    Send,
)
from tests.test_router import answer, candidate, init, offer, reply_of, req, single_forward

ROOM = Path.ROOM
SERVICE_UNAVAILABLE = 503


def join(member: str, room: str, *, text: bool = False) -> Frame:
    return req(Command.JOIN, member, room, text=text)


def leave(member: str, room: str) -> Frame:
    return req(Command.LEAVE, member, room)


def sends(actions: list[Action]) -> list[Send]:
    assert all(isinstance(a, Send) for a in actions), actions
    return [a for a in actions if isinstance(a, Send)]


def presences(actions: list[Action]) -> dict[int, tuple[str, str, Presence]]:
    """The Presence frames among ``actions``: conn -> (source, target, body)."""
    found: dict[int, tuple[str, str, Presence]] = {}
    for action in sends(actions):
        envelope = decode(action.frame)
        if envelope.command is Command.PRESENCE:
            assert action.notice, "presence is server-originated"
            assert action.conn not in found, "one presence per member per event"
            request = envelope.request
            found[action.conn] = (request.source, request.target, parse_presence(request.body))
    return found


def code_of(actions: list[Action], conn: int) -> tuple[Command, int]:
    """The (command, code) of the one reply to ``conn`` (nothing else sent)."""
    assert len(actions) == 1, actions
    action = actions[0]
    assert isinstance(action, Send) and action.conn == conn and not action.notice, action
    command, response = reply_of(action.frame)
    assert response.code == OK or response.msg
    return command, response.code


def joined(router: Router, conn: int, member: str, room: str = "r1") -> list[Action]:
    """``conn`` (connected here) joins; asserts the 105 ok and returns all actions."""
    router.connect(conn, ROOM)
    actions = router.receive(conn, join(member, room))
    first = actions[0]
    assert isinstance(first, Send) and first.conn == conn
    assert reply_of(first.frame)[0] is Command.JOIN_RESPONSE
    assert reply_of(first.frame)[1].code == OK, reply_of(first.frame)[1]
    return actions


@pytest.fixture
def trio() -> Router:
    """Room r1 with a (conn 1), b (2), c (3), joined in that order."""
    router = Router()
    for conn, member in ((1, "a"), (2, "b"), (3, "c")):
        joined(router, conn, member)
    return router


def test_join_answers_ok_then_the_members_list_oldest_first() -> None:
    """A joiner gets 105 ok, then a Presence `members` with the others in join order."""
    router = Router()
    joined(router, 1, "zed")
    joined(router, 2, "amy")
    actions = joined(router, 3, "bob")
    mine = presences(actions)[3]
    assert mine == ("", "bob", Presence("r1", "members", members=("zed", "amy")))
    assert router.rooms() == {"r1": ["zed", "amy", "bob"]}


def test_first_member_gets_an_empty_members_list() -> None:
    actions = joined(Router(), 1, "solo")
    assert presences(actions) == {1: ("", "solo", Presence("r1", "members", members=()))}


def test_join_presence_goes_to_every_other_member_only() -> None:
    """c's join is told to a and b (not to c, not to another room's member)."""
    router = Router()
    joined(router, 1, "a")
    joined(router, 2, "b")
    joined(router, 9, "x", room="other")
    told = presences(joined(router, 3, "c"))
    assert told[1] == ("c", "a", Presence("r1", "join", member="c"))
    assert told[2] == ("c", "b", Presence("r1", "join", member="c"))
    assert set(told) == {1, 2, 3}  # 3: its own members list


def test_presence_follows_each_receivers_frame_type() -> None:
    """A member that speaks text gets text Presence frames; a binary one, binary."""
    router = Router()
    router.connect(1, ROOM)
    router.receive(1, join("t", "r1", text=True))
    actions = joined(router, 2, "b")
    by_conn = {a.conn: a.frame for a in sends(actions)}
    assert isinstance(by_conn[1], str) and isinstance(by_conn[2], bytes)


def test_leave_command_tells_the_others_and_frees_the_id(trio: Router) -> None:
    actions = trio.receive(2, leave("b", "r1"))
    first = actions[0]
    assert isinstance(first, Send) and reply_of(first.frame)[0] is Command.LEAVE_RESPONSE
    assert reply_of(first.frame)[1].code == OK
    assert presences(actions) == {
        1: ("b", "a", Presence("r1", "leave", member="b")),
        3: ("b", "c", Presence("r1", "leave", member="b")),
    }
    assert trio.rooms() == {"r1": ["a", "c"]}
    # the connection may join again, here or elsewhere
    assert reply_of(sends(trio.receive(2, join("b2", "r2")))[0].frame)[1].code == OK


def test_disconnect_leaves_the_room_and_the_last_one_out_removes_it(trio: Router) -> None:
    told = presences(trio.leave_room(1))
    assert told == {
        2: ("a", "b", Presence("r1", "leave", member="a")),
        3: ("a", "c", Presence("r1", "leave", member="a")),
    }
    trio.disconnect(1)
    assert trio.rooms() == {"r1": ["b", "c"]}
    trio.disconnect(2)  # (without leave_room: forgotten silently)
    assert trio.rooms() == {"r1": ["c"]}
    assert trio.leave_room(3) == []  # nobody left to tell
    trio.disconnect(3)
    assert trio.rooms() == {}
    assert len(trio) == 0


def test_room_full_is_503_and_leaves_no_trace() -> None:
    router = Router(max_room_size=2)
    joined(router, 1, "a")
    joined(router, 2, "b")
    router.connect(3, ROOM)
    assert code_of(router.receive(3, join("c", "r1")), 3) == (
        Command.JOIN_RESPONSE,
        SERVICE_UNAVAILABLE,
    )
    assert router.rooms() == {"r1": ["a", "b"]}
    # another room is not full
    assert reply_of(sends(router.receive(3, join("c", "r2")))[0].frame)[1].code == OK


@pytest.mark.parametrize(
    ("member", "room"),
    [
        ("a", ""),
        ("a", "has space"),
        ("a", "x" * 65),
        ("a", "new\nline"),
        ("a", "r1\n"),
        ("a", "é"),
        ("", "r1"),
        ("m" * 65, "r1"),
    ],
)
def test_bad_room_name_or_member_id_is_400(member: str, room: str) -> None:
    router = Router()
    router.connect(1, ROOM)
    assert code_of(router.receive(1, join(member, room)), 1) == (
        Command.JOIN_RESPONSE,
        BAD_REQUEST,
    )
    assert router.rooms() == {}


def test_longest_room_name_and_member_id_are_accepted() -> None:
    joined(Router(), 1, "m" * 64, room="A-z.0_9" + "x" * 57)


def test_member_id_taken_in_the_room_is_409_but_free_in_another(trio: Router) -> None:
    trio.connect(4, ROOM)
    assert code_of(trio.receive(4, join("a", "r1")), 4) == (Command.JOIN_RESPONSE, CONFLICT)
    assert reply_of(sends(trio.receive(4, join("a", "r2")))[0].frame)[1].code == OK


def test_second_join_on_one_connection_is_409(trio: Router) -> None:
    assert code_of(trio.receive(1, join("a", "r2")), 1) == (Command.JOIN_RESPONSE, CONFLICT)
    assert code_of(trio.receive(1, join("a", "r1")), 1) == (Command.JOIN_RESPONSE, CONFLICT)
    assert trio.rooms() == {"r1": ["a", "b", "c"]}


def test_relay_between_members_reaches_the_target_only(trio: Router) -> None:
    """Offer a->b, answer b->a, candidates both ways: each one Forward to the one
    addressed, verbatim, acked with the request's response command."""
    for conn, frame, target, reply in (
        (1, offer("a", "b"), 2, Command.OFFER_RESPONSE),
        (2, answer("b", "a"), 1, Command.ANSWER_RESPONSE),
        (1, candidate("a", "b"), 2, Command.CANDIDATE_RESPONSE),
        (2, candidate("b", "a"), 1, Command.CANDIDATE_RESPONSE),
    ):
        forward = single_forward(trio.receive(conn, frame))
        assert forward.target == target and forward.frame == frame and forward.sender == conn
        assert reply_of(forward.ack) == (reply, reply_of(forward.ack)[1])
        assert reply_of(forward.ack)[1].code == OK
    assert trio.calls() == 1


def test_unknown_member_is_404(trio: Router) -> None:
    assert code_of(trio.receive(1, offer("a", "nobody")), 1) == (
        Command.OFFER_RESPONSE,
        NOT_FOUND,
    )


def test_relay_before_joining_or_with_a_forged_source_is_403(trio: Router) -> None:
    trio.connect(5, ROOM)
    assert code_of(trio.receive(5, offer("b", "a")), 5) == (Command.OFFER_RESPONSE, FORBIDDEN)
    assert code_of(trio.receive(3, offer("b", "a")), 3) == (Command.OFFER_RESPONSE, FORBIDDEN)
    assert code_of(trio.receive(5, leave("x", "r1")), 5) == (Command.LEAVE_RESPONSE, FORBIDDEN)
    assert code_of(trio.receive(3, leave("c", "r2")), 3) == (Command.LEAVE_RESPONSE, FORBIDDEN)
    assert trio.calls() == 0


def test_cross_room_relay_is_403(trio: Router) -> None:
    """A member of r2 cannot reach a member of r1, even one whose ID it knows."""
    joined(trio, 7, "x", room="r2")
    joined(trio, 8, "y", room="r2")
    for frame in (offer("x", "a"), candidate("x", "b"), answer("x", "c")):
        actions = trio.receive(7, frame)
        assert len(actions) == 1 and not isinstance(actions[0], Forward)
        assert reply_of(sends(actions)[0].frame)[1].code == FORBIDDEN


def test_answer_and_candidate_outside_a_call_are_403_and_never_forwarded(trio: Router) -> None:
    """An Answer to a member that made no offer, a Candidate from the earlier
    joiner with no call: 403; then the real call still works."""
    assert code_of(trio.receive(2, answer("b", "a")), 2) == (Command.ANSWER_RESPONSE, FORBIDDEN)
    assert code_of(trio.receive(1, candidate("a", "c")), 1) == (
        Command.CANDIDATE_RESPONSE,
        FORBIDDEN,
    )
    # c offered to b, so a third member a cannot answer c
    single_forward(trio.receive(3, offer("c", "b")))
    assert code_of(trio.receive(1, answer("a", "c")), 1) == (Command.ANSWER_RESPONSE, FORBIDDEN)
    assert single_forward(trio.receive(2, answer("b", "c"))).target == 3


def test_the_later_joiner_may_trickle_before_its_offer(trio: Router) -> None:
    """c (joined after a) sends a Candidate to a first: it starts the call, as pion does."""
    assert single_forward(trio.receive(3, candidate("c", "a"))).target == 1
    assert single_forward(trio.receive(1, candidate("a", "c"))).target == 3
    assert single_forward(trio.receive(1, answer("a", "c"))).target == 3


def test_leaving_ends_the_members_calls(trio: Router) -> None:
    single_forward(trio.receive(3, offer("c", "a")))
    single_forward(trio.receive(1, offer("a", "b")))
    assert trio.calls() == 2
    trio.receive(1, leave("a", "r1"))
    assert trio.calls() == 0
    joined(trio, 1, "a")  # rejoining does not bring a call back
    assert code_of(trio.receive(1, answer("a", "c")), 1) == (Command.ANSWER_RESPONSE, FORBIDDEN)


def test_room_calls_do_not_mix_with_one_to_one_calls() -> None:
    """An offer peer called answer peer "b"; a room member "b" cannot use that
    call to reach it, and the room's calls are apart."""
    router = Router()
    router.connect(20, Path.REGISTER)
    router.connect(21, Path.OFFER)
    router.receive(20, init("b"))
    single_forward(router.receive(21, offer("o", "b")))
    joined(router, 1, "b")
    joined(router, 2, "o")
    assert code_of(router.receive(1, answer("b", "o")), 1) == (Command.ANSWER_RESPONSE, FORBIDDEN)
    assert single_forward(router.receive(20, answer("b", "o"))).target == 21


@pytest.mark.parametrize("command", [Command.INIT, Command.PRESENCE])
def test_init_or_presence_from_a_room_client_is_403(trio: Router, command: Command) -> None:
    assert code_of(trio.receive(1, req(command, "a", "r1")), 1) == (command.response, FORBIDDEN)


@pytest.mark.parametrize("path", [Path.REGISTER, Path.OFFER])
@pytest.mark.parametrize("command", [Command.JOIN, Command.PRESENCE, Command.LEAVE])
def test_room_commands_on_the_1to1_paths_are_403(path: Path, command: Command) -> None:
    router = Router()
    router.connect(1, path)
    assert code_of(router.receive(1, req(command, "a", "r1")), 1) == (command.response, FORBIDDEN)
    assert router.rooms() == {}


def test_presence_acks_from_members_are_only_logged(trio: Router) -> None:
    """A member's 106 (its optional ack of a Presence) gets no reply."""
    assert trio.receive(1, encode_response(Command.PRESENCE_RESPONSE, 0, "ok")) == []


# -- tokens -------------------------------------------------------------------------


def test_room_token_joins_its_room_as_its_id_only() -> None:
    router = Router()
    router.connect(1, ROOM, allowed_id="a", allowed_room="r1")
    for frame in (join("b", "r1"), join("a", "r2")):
        assert code_of(router.receive(1, frame), 1) == (Command.JOIN_RESPONSE, FORBIDDEN)
    assert reply_of(sends(router.receive(1, join("a", "r1")))[0].frame)[1].code == OK


def test_room_less_token_cannot_join_a_room() -> None:
    router = Router()
    router.connect(1, ROOM, allowed_id="a")
    assert code_of(router.receive(1, join("a", "r1")), 1) == (Command.JOIN_RESPONSE, FORBIDDEN)
    assert router.rooms() == {}


@pytest.mark.parametrize(
    ("path", "frame", "reply"),
    [
        (Path.REGISTER, init("a"), Command.INIT_RESPONSE),
        (Path.OFFER, offer("a", "b"), Command.OFFER_RESPONSE),
        (Path.OFFER, candidate("a", "b"), Command.CANDIDATE_RESPONSE),
    ],
)
def test_room_token_is_refused_on_the_1to1_paths(path: Path, frame: Frame, reply: Command) -> None:
    router = Router()
    router.connect(2, Path.REGISTER)
    router.receive(2, init("b"))
    router.connect(1, path, allowed_id="a", allowed_room="r1")
    assert code_of(router.receive(1, frame), 1) == (reply, FORBIDDEN)
    assert router.answer_peers() == ["b"]
