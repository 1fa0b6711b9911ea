"""The hold queue of the MQTT actuator link, on a fake clock: order, count and age bounds,
and what it counts when it drops."""

from __future__ import annotations

import pytest

from devices.actuators import Outgoing
from devices.mqtt_actuator import CommandHold
from gateway.model import Command


def out(actuator: str, i: int) -> Outgoing:
    command = Command(actuator, {"i": i}, None, 0.0)
    return Outgoing(actuator, [(f"{actuator}/set", str(i).encode())], 1, command)


def drain(hold: CommandHold) -> list[tuple[str, bytes]]:
    got = []
    while hold.head() is not None:
        got.append(hold.pop().outgoing.messages[0])
    return got


@pytest.mark.parametrize(
    ("adds", "max_count", "kept", "dropped"),
    [
        ([("a", 0), ("b", 1), ("a", 2)], 3, [0, 1, 2], {}),
        ([("a", 0), ("b", 1), ("a", 2), ("a", 3)], 3, [1, 2, 3], {("a", "queue_full"): 1}),
        ([("a", 0), ("b", 1), ("a", 2), ("c", 3), ("c", 4)], 2, [3, 4],
         {("a", "queue_full"): 2, ("b", "queue_full"): 1}),
        ([("a", i) for i in range(10)], 1, [9], {("a", "queue_full"): 9}),
    ],
)
def test_count_bound_drops_the_oldest(
    adds: list[tuple[str, int]], max_count: int, kept: list[int], dropped: dict[tuple[str, str], int]
) -> None:
    hold = CommandHold(max_count, 30.0)
    for actuator, i in adds:
        hold.add(out(actuator, i), 0.0)
    assert len(hold) == len(kept)
    assert [int(payload) for _, payload in drain(hold)] == kept
    assert hold.dropped == dropped


@pytest.mark.parametrize(
    ("held_at", "now", "kept"),
    [
        ([0.0, 10.0, 20.0], 30.0, [0, 1, 2]),  # exactly max_age old: still sent
        ([0.0, 10.0, 20.0], 30.5, [1, 2]),
        ([0.0, 10.0, 20.0], 45.0, [2]),
        ([0.0, 10.0, 20.0], 600.0, []),
        ([], 600.0, []),
    ],
)
def test_age_bound_drops_what_waited_too_long(held_at: list[float], now: float, kept: list[int]) -> None:
    hold = CommandHold(100, 30.0)
    for i, at in enumerate(held_at):
        hold.add(out("light", i), at)
    expired = hold.expire(now)
    gone = [i for i in range(len(held_at)) if i not in kept]
    assert [int(h.outgoing.messages[0][1]) for h in expired] == gone
    assert [int(payload) for _, payload in drain(hold)] == kept
    assert hold.dropped == ({("light", "too_old"): len(expired)} if expired else {})


def test_a_partly_sent_command_keeps_its_place_and_drop_all_counts_the_reason() -> None:
    hold = CommandHold(10, 30.0)
    hold.add(out("plug", 0), 0.0, start=1)
    hold.add(out("plug", 1), 0.0)
    head = hold.head()
    assert head is not None
    assert (head.next, int(head.outgoing.messages[0][1])) == (1, 0)
    assert len(hold.drop_all("stopped")) == 2
    assert len(hold) == 0
    assert hold.dropped == {("plug", "stopped"): 2}
