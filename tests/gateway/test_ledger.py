"""The redelivery check: per MQTT packet id, safe with brokers that reuse the lowest free id."""

from __future__ import annotations

from gateway.ledger import DeliveryLedger
from gateway.model import Origin


def msg(payload: bytes, mid: int, *, dup: bool = False, topic: str = "door/1") -> Origin:
    return Origin.of(topic, payload, mid=mid, dup=dup)


def test_a_dup_of_a_committed_message_is_not_taken_again() -> None:
    ledger = DeliveryLedger()
    first = msg(b"21.5", 1)
    assert ledger.take(first)
    ledger.durable([first])
    assert not ledger.take(msg(b"21.5", 1, dup=True))  # its PUBACK was lost in a crash


def test_a_dup_never_committed_is_taken_with_all_its_readings() -> None:
    ledger = DeliveryLedger()
    assert ledger.take(msg(b'{"power":5,"energy":7}', 9, dup=True))


def test_a_dup_of_a_message_still_in_flight_is_not_taken_twice() -> None:
    ledger = DeliveryLedger()
    assert ledger.take(msg(b"x", 4))
    assert not ledger.take(msg(b"x", 4, dup=True))  # redelivered after a reconnect, not committed yet
    assert ledger.inflight == 1


def test_the_same_words_under_another_packet_id_are_another_message() -> None:
    ledger = DeliveryLedger()
    a = msg(b"true", 41)
    assert ledger.take(a)
    ledger.durable([a])
    assert ledger.take(msg(b"true", 42, dup=True))


def test_a_broker_that_reuses_the_lowest_free_id() -> None:
    """The broker sends `ON` as packet id 1 every minute. The second one arrives without
    DUP: that proves the first was acknowledged, so the slot now belongs to the second.
    When the gateway crashes before committing it, its redelivery is taken (not lost)."""
    ledger = DeliveryLedger()
    first = msg(b"ON", 1)
    assert ledger.take(first)
    ledger.durable([first])
    second = msg(b"ON", 1)  # same id, topic and payload: only its arrival without DUP tells
    assert ledger.take(second)
    ledger.void()  # the batch never became durable (the crash)
    restarted = DeliveryLedger([(1, first.digest)])  # what the spool had committed
    assert not restarted.take(msg(b"ON", 1, dup=True))  # the documented window: see gateway/ledger.py
    # without the crash, the reuse is seen and the slot moves on:
    ledger2 = DeliveryLedger([(1, first.digest)])
    assert ledger2.take(msg(b"ON", 1))
    ledger2.durable([msg(b"ON", 1)])
    assert ledger2.take(msg(b"OFF", 1))


def test_slots_survive_days_and_are_bounded_by_capacity() -> None:
    ledger = DeliveryLedger([(mid, mid * 10) for mid in range(10)], capacity=4)
    assert len(ledger) == 4
    assert not ledger.take(Origin(9, 90, True))  # no time window: a week later it still matches
    assert ledger.take(Origin(0, 0, True))  # evicted by capacity (the oldest slots go first)


def test_void_forgets_what_was_in_flight() -> None:
    ledger = DeliveryLedger()
    assert ledger.take(msg(b"x", 5))
    ledger.void()
    assert ledger.take(msg(b"x", 5, dup=True))  # redelivered after the spool failed: taken again
