"""The positional rows of a stored customer record (hist, cons, led, ended, trk, offers): a
newer layout may append positions to them. This cjo reads the positions it knows, and writes
back the others with their row (docs/architecture.md, the record layout)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo.abc import RECORD_LAYOUT, CustomerState, decode_state, encode_state
from cjo.errors import CorruptRecordError
from cjo.model.events import Profile
from cjo.model.policies import FrequencyCap
from cjo.runtime.state import (
    EndedEnrollment,
    Enrollment,
    EntryHistory,
    OfferHistory,
    Track,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
# The positional parts and the positions this cjo writes in their rows.
WIDTHS = {"hist": 5, "cons": 4, "led": 3, "ended": 10, "trk": 9, "offers": 2}
PARTS = tuple(WIDTHS)
# A track's row leaves out its trailing defaults: a newer row holds them all before its own.
TRACK_DEFAULTS = [None, None, 0, 0, None, None, [], {}]


def _state() -> CustomerState:
    """A record with two rows (or more) in every positional part."""
    return CustomerState(
        "c1", T0, 4, Profile("c1", {"plan": "pro", "seen": {"first": T0}}),
        enrollments=[Enrollment("e3", "cart", 2, "c1", T0, "wait", T0, wake_at=T0 + HOUR,
                                context={"at": T0, "cart": {"added": [T0]}})],
        ended=(
            EndedEnrollment("e1", "cart", 1, T0, T0 + HOUR, "completed", None, "mail"),
            EndedEnrollment("e2", "cart", 2, T0, T0 + 2 * HOUR, "converted", "goal", None,
                            "k", T0 + HOUR),
        ),
        history={("cart", None): EntryHistory.of(2), ("cart", "k"): EntryHistory.of(
            1, (T0,), T0 + 2 * HOUR)},
        consent={("news", "email"): (True, T0), ("*", "sms"): (False, T0 + HOUR)},
        sends=[(T0, "email", ("promo",)), (T0 + HOUR, "sms", ())],
        tracks={"buy": Track(T0, count=2),
                "spend": Track(T0, T0, T0 + HOUR, 2, 30.0, 10.0, 20.0, [(T0, 10.0)],
                               {"q1": [2, 30.0, 10.0, 20.0]})},
        offers={"ten": OfferHistory(1, (T0,)), "free": OfferHistory(3, ())},
        decided_at=T0 + HOUR,
    )


def _rows(data: dict[str, Any], part: str) -> list[list[Any]]:
    rows = data[part]
    return list(rows.values()) if isinstance(rows, dict) else list(rows)


def _with_positions(data: dict[str, Any], layout: int) -> dict[str, Any]:
    """``data`` as a cjo of ``layout`` that appends a position to every row would write it."""
    newer = copy.deepcopy(data)
    newer["v"] = layout
    for part in PARTS:
        for n, row in enumerate(_rows(newer, part)):
            if part == "trk":
                row.extend(TRACK_DEFAULTS[len(row) - 1:])
            row.append({"more": f"{part}-{n}", "at": {"$dt": n}})
    return newer


@pytest.mark.parametrize("layout", [RECORD_LAYOUT + 1, RECORD_LAYOUT])
def test_rows_with_appended_positions_are_read_and_written_back_whole(layout: int) -> None:
    # Only a newer layout appends positions; a record of this one that holds them anyway (a
    # newer cjo that did not number its layout) is read the same way.
    state = _state()
    data = json.loads(encode_state(state))
    assert all(len(_rows(data, part)) >= 2 for part in PARTS)
    newer = _with_positions(data, layout)
    read = decode_state(json.dumps(newer), "c1")
    assert read.profile == state.profile and read.enrollments == state.enrollments
    assert read.ended == state.ended and read.history == state.history
    assert (read.consent, read.sends, read.tracks, read.offers) == (
        state.consent, state.sends, state.tracks, state.offers)
    assert json.loads(encode_state(read)) == newer
    # Read again (and copied, as the engine does), it is still the same record.
    again = decode_state(encode_state(read.copy()), "c1")
    assert again == read and json.loads(encode_state(again)) == newer


def test_a_record_of_this_layout_whose_last_rows_are_longer_is_read_whole() -> None:
    # Its rows are cut only once reading them whole failed: the values read before that
    # (revived in place) are read again.
    state = _state()
    data = json.loads(encode_state(state))
    for n, row in enumerate(data["offers"].values()):  # the last part read
        row.append(n)
    read = decode_state(json.dumps(data), "c1")
    assert read.profile == state.profile and read.enrollments == state.enrollments
    assert read.offers == state.offers
    assert json.loads(encode_state(read)) == data


def test_a_record_without_appended_positions_keeps_nothing_apart() -> None:
    data = json.loads(encode_state(_state()))
    newer = decode_state(json.dumps({**data, "v": RECORD_LAYOUT + 1}), "c1")
    assert newer.extra == {"v": RECORD_LAYOUT + 1}
    assert decode_state(json.dumps(data), "c1").extra == {}


@pytest.mark.parametrize("layout", [RECORD_LAYOUT + 1, RECORD_LAYOUT, None])
@pytest.mark.parametrize("part", [p for p in PARTS if p != "trk"])
def test_a_row_shorter_than_this_layout_writes_is_refused_naming_the_customer(
    part: str, layout: int | None
) -> None:
    data = json.loads(encode_state(_state()))
    if layout is not None:  # None: no row holds more positions than this layout writes
        data = _with_positions(data, layout)
    rows = _rows(data, part)
    rows[-1][:] = rows[-1][:2] if part != "offers" else rows[-1][:1]
    with pytest.raises(CorruptRecordError, match="'c9'") as caught:
        decode_state(json.dumps(data), "c9")
    assert caught.value.customer_id == "c9"
    assert part in str(caught.value) and "fewer than" in str(caught.value)


def test_a_track_row_may_leave_out_its_trailing_positions_but_not_every_one() -> None:
    data = json.loads(encode_state(_state()))
    assert data["trk"]["buy"] == [data["created"], None, None, 2]  # defaults left out
    assert decode_state(json.dumps(data), "c1").tracks["buy"] == Track(T0, count=2)
    data["trk"]["buy"] = []
    with pytest.raises(CorruptRecordError, match="'c1'"):
        decode_state(json.dumps(data), "c1")


def test_a_row_this_cjo_removes_drops_its_positions_and_a_changed_one_keeps_them() -> None:
    newer = _with_positions(json.loads(encode_state(_state())), RECORD_LAYOUT + 1)
    state = decode_state(json.dumps(newer), "c1")
    state.ended = state.ended[1:]  # the oldest ended enrollment pruned
    del state.history[("cart", "k")]  # a keyed instance's history dropped
    state.history[("cart", None)] = EntryHistory.of(3)  # one more entry counted
    del state.own_consent()[("news", "email")]
    state.own_offers()["ten"] = OfferHistory(2, (T0, T0 + HOUR))
    del state.own_offers()["free"]
    state.own_tracks().pop("buy")
    state.sends = state.sends[1:]
    state.own_offers()["new"] = OfferHistory(1, ())  # a row this cjo adds has none
    written = json.loads(encode_state(state))

    def more(part: str) -> list[list[str]]:
        return [[p["more"] for p in row[WIDTHS[part]:]] for row in _rows(written, part)]

    assert more("ended") == [["ended-1"]]
    assert more("hist") == [["hist-0"]] and written["hist"][0][2] == 3
    assert more("cons") == [["cons-1"]]
    assert more("led") == [["led-1"]]
    assert more("trk") == [["trk-1"]]
    assert more("offers") == [["offers-0"], []] and written["offers"]["ten"][0] == 2


def _ledger_with(positions: list[str], sends: list[tuple[datetime, str, tuple[str, ...]]],
                 ) -> dict[str, Any]:
    data = json.loads(encode_state(CustomerState("c1", T0, sends=sends)))
    for row, more in zip(data["led"], positions, strict=True):
        row.append(more)
    return {**data, "v": RECORD_LAYOUT + 1}


def test_ledger_entries_keep_their_positions_as_the_ledger_is_pruned_and_added_to() -> None:
    from cjo.delivery.caps import record_send

    # Entries have no id: the same instant, channel and tags twice are told apart by order.
    sends = [(T0, "email", ("promo",)), (T0, "email", ("promo",)),
             (T0 + HOUR, "email", ("promo",)), (T0 + HOUR, "sms", ("promo",))]
    state = decode_state(json.dumps(_ledger_with(["a", "b", "c", "d"], sends)), "c1")
    assert state.sends == sends
    # A send two hours on, under a cap of three sends in two hours: the entries of T0 leave
    # the window (both: they have the same instant), the new one has no positions.
    record_send(state, [FrequencyCap("c", 3, per=2 * HOUR)], "email", ("promo",),
                T0 + 2 * HOUR)
    written = json.loads(encode_state(state))
    assert [row[3:] for row in written["led"]] == [["c"], ["d"], []]
    assert [row[:3] for row in written["led"]] == json.loads(encode_state(
        CustomerState("c1", T0, sends=[*sends[2:], (T0 + 2 * HOUR, "email", ("promo",))])
    ))["led"]


def test_equal_ledger_entries_keep_their_own_positions_in_order() -> None:
    sends = [(T0, "email", ("promo",))] * 3
    data = _ledger_with(["a", "b", "c"], sends)
    state = decode_state(json.dumps(data), "c1")
    assert json.loads(encode_state(state))["led"] == data["led"]
    state.sends = state.sends[:2]  # one fewer: the last one's positions are not written
    assert [row[3:] for row in json.loads(encode_state(state))["led"]] == [["a"], ["b"]]


def test_the_codec_knows_how_many_positions_it_writes_in_every_row() -> None:
    # Positions past these are kept apart as a newer layout's: a position the codec writes
    # and this table does not count would be written twice.
    from cjo.storage.codec import _ROWS

    full = CustomerState(
        "c1", T0, ended=(EndedEnrollment("e1", "j", 1, T0, T0, "converted", "r", "s", "k",
                                         T0),),
        history={("j", "k"): EntryHistory.of(1, (T0,), T0)},
        consent={("t", "c"): (True, T0)}, sends=[(T0, "email", ("x",))],
        tracks={"t": Track(T0, T0, T0, 1, 2.0, 2.0, 2.0, [(T0, 2.0)], {"r": [1, 2, 2, 2]})},
        offers={"o": OfferHistory(1, (T0,))},
    )
    data = json.loads(encode_state(full))
    assert {part: width for part, width, *_ in _ROWS} == WIDTHS
    for part in PARTS:
        assert {len(row) for row in _rows(data, part)} == {WIDTHS[part]}, part
