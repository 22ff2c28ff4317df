"""The customer record's rarely set fields (extra, consent, blocked, sends, tracks, segments,
segments_basis, offers): kept in one sub-record made when the first is set, read and assigned
as attributes, compared, copied and shared-when-empty like the others."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from cjo.abc import RECORD_LAYOUT, CustomerState
from cjo.model.events import Profile
from cjo.runtime.state import (
    NO_ENTRIES,
    NO_ITEMS,
    Enrollment,
    EntryHistory,
    KeptRecord,
    OfferHistory,
    Track,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RARE = ("extra", "consent", "blocked", "sends", "tracks", "segments", "segments_basis", "offers")


def _filled() -> CustomerState:
    return CustomerState(
        "c1", T0, 3, Profile("c1", {"n": 1}),
        extra={"future": 1}, consent={("news", "*"): (True, T0)}, blocked={"sms": "STOP"},
        sends=[(T0, "email", ("promo",))], tracks={"buy": Track(T0, count=2)},
        segments={"vip": T0}, segments_basis="abc", offers={"o1": OfferHistory(1, (T0,))},
        decided_at=T0,
    )


def test_a_record_without_rare_fields_reads_them_empty_and_shared() -> None:
    state = CustomerState("c1", T0)
    assert (state.extra, state.consent, state.blocked, state.tracks, state.segments,
            state.offers) == ({}, {}, {}, {}, {}, {})
    assert state.sends is NO_ENTRIES and state.segments_basis is None
    for name in ("extra", "consent", "blocked", "tracks", "segments", "offers"):
        assert getattr(state, name) is NO_ITEMS
        with pytest.raises(TypeError, match="shared empty"):
            getattr(state, name)["x"] = 1
    with pytest.raises(TypeError, match="shared empty"):
        state.sends.append((T0, "email", ()))


def test_keyword_and_positional_arguments_keep_their_order_and_names() -> None:
    by_keyword = _filled()
    by_position = CustomerState(
        "c1", T0, 3, Profile("c1", {"n": 1}), [], (), {}, {}, {}, {"future": 1},
        {("news", "*"): (True, T0)}, {"sms": "STOP"}, [(T0, "email", ("promo",))],
        {"buy": Track(T0, count=2)}, {"vip": T0}, "abc", {"o1": OfferHistory(1, (T0,))}, T0,
    )
    assert by_position == by_keyword
    assert by_keyword.segments_basis == "abc" and by_keyword.blocked == {"sms": "STOP"}
    assert repr(by_keyword).startswith("CustomerState(customer_id='c1', created_at=")
    assert "segments_basis='abc', offers={'o1'" in repr(by_keyword)


def test_equality_does_not_depend_on_holding_empty_rare_fields() -> None:
    assert CustomerState("c1", T0) == CustomerState("c1", T0, tracks={}, segments_basis=None)
    assert CustomerState("c1", T0) != CustomerState("c1", T0, segments_basis="x")
    assert CustomerState("c1", T0) != CustomerState("c1", T0, sends=[(T0, "sms", ())])


def test_own_accessors_give_a_changeable_container_kept_by_the_record() -> None:
    state = CustomerState("c1", T0)
    state.own_tracks()["buy"] = Track(T0)
    state.own_segments()["vip"] = T0
    state.own_offers()["o1"] = OfferHistory(1)
    state.own_consent()[("*", "*")] = (False, T0)
    state.own_blocked()["sms"] = "STOP"
    assert state == CustomerState(
        "c1", T0, tracks={"buy": Track(T0)}, segments={"vip": T0},
        offers={"o1": OfferHistory(1)}, consent={("*", "*"): (False, T0)},
        blocked={"sms": "STOP"},
    )
    assert state.own_tracks() is state.tracks  # the same container once owned


def test_assigning_a_rare_field_keeps_the_others() -> None:
    state = _filled()
    state.segments_basis = None
    state.sends = NO_ENTRIES
    assert state.segments == {"vip": T0} and state.extra == {"future": 1}
    assert state.segments_basis is None and state.sends == []
    bare = CustomerState("c1", T0)
    bare.segments_basis = None  # clearing what is not set makes nothing
    assert bare == CustomerState("c1", T0)


def test_a_copy_changes_independently() -> None:
    state = _filled()
    copy = state.copy()
    assert copy == state
    copy.consent[("news", "email")] = (False, T0)
    copy.tracks["buy"].count += 1
    copy.segments.pop("vip")
    copy.offers["o2"] = OfferHistory(1)
    copy.blocked.clear()
    copy.extra["more"] = 2
    copy.segments_basis = "new"
    assert state == _filled()
    assert CustomerState("c1", T0).copy().tracks is NO_ITEMS  # nothing to copy: still shared


def test_evolve_and_copy_keep_the_rare_fields_and_never_assign_the_originals() -> None:
    state = _filled()
    later = attrs.evolve(state, revision=4)
    assert later.revision == 4 and later.segments == state.segments
    later.segments = {}
    later.consent = {}
    assert state == _filled()
    shallow = copy.copy(state)
    shallow.segments_basis = "other"
    assert shallow.segments is state.segments and state.segments_basis == "abc"
    changed = attrs.evolve(state, segments_basis=None, blocked={})
    assert changed.segments_basis is None and changed.blocked == {}
    assert changed.consent == state.consent and state == _filled()


def test_a_kept_record_drops_a_sub_record_left_empty() -> None:
    state = CustomerState("c1", T0, tracks={}, segments={}, offers={}, consent={})
    kept = KeptRecord(state)
    # What it is for: a stored record with every rare field empty holds no sub-record.
    assert kept._rare is None
    assert kept.state() == CustomerState("c1", T0)
    filled = _filled()
    filled.segments = {}
    kept = KeptRecord(filled)
    assert kept._rare is not None
    assert kept.segments is NO_ITEMS and kept._rare.segments_basis == "abc"
    with pytest.raises(TypeError, match="shared empty"):
        kept._rare.segments["x"] = T0 + timedelta(hours=1)
    # A record taken from it is the core's to change.
    loaded = kept.state()
    loaded.own_segments()["x"] = T0
    assert kept.segments is NO_ITEMS and kept.state().segments == {}


def test_a_kept_record_holds_its_wake_up_and_gives_independent_copies() -> None:
    state = CustomerState("c1", T0, 4, Profile("c1", {"n": 1}), timers={"t": T0 + timedelta(days=3)},
                          marks={"m": T0}, decided_at=T0)
    state.enrollments.append(Enrollment("e1", "j", 1, "c1", T0, wake_at=T0 + timedelta(days=1),
                                        context={"cart": "A"}))
    state.history[("j", None)] = EntryHistory.of(1, (), None)
    kept = KeptRecord(state)
    assert kept.wake_at == T0 + timedelta(days=1)
    loaded = kept.state()
    assert loaded == state
    loaded.enrollments[0].context["cart"] = "B"
    loaded.enrollments[0].wake_at = None
    loaded.timers["t"] = T0
    loaded.history.clear()
    assert kept.state() == state and kept.wake_at == T0 + timedelta(days=1)
    # Keeping a changed record follows it, in the same object.
    kept.keep(loaded)
    assert kept.state() == loaded and kept.wake_at == T0
    loaded.timers = {}
    kept.keep(loaded)
    assert kept.wake_at is None and kept.timers is NO_ITEMS


def test_an_enrollment_copy_holds_every_field_and_its_own_containers() -> None:
    """The copy is written out field by field (it runs for every loaded enrollment): a field
    added to ``Enrollment`` and forgotten there fails here."""
    from cjo.runtime.state import Enrollment

    values: dict[str, object] = {}
    for n, field in enumerate(attrs.fields(Enrollment)):
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            values[field.name] = {"k": n}
        elif field.type in ("int", int) or isinstance(default, int):
            values[field.name] = 100 + n
        elif "datetime" in str(field.type):
            values[field.name] = T0 + timedelta(minutes=n)
        else:
            values[field.name] = f"v{n}"
    original = Enrollment(**values)  # type: ignore[arg-type]
    twin = Enrollment(**values)  # type: ignore[arg-type]
    copied = original.copy()
    assert copied == original
    for field in attrs.fields(Enrollment):
        assert getattr(copied, field.name) == values[field.name], field.name
    copied.context["k"] = "changed"
    copied.visits["k"] = 99
    copied.paths["more"] = "x"
    assert original == twin


def _every_field() -> Enrollment:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return Enrollment(
        "e1", "j", 2, "c1", t, "s", t, "active", "k", t, t, None, None, t, "ev", {"a": 1},
        {"s": 1}, {"split": "a"}, t, 2, {"s": 1}, True, {"s2": (0, ("e1:s:1",))},
    )


def test_the_codec_knows_every_field_it_writes_in_an_enrollment() -> None:
    # What it does not know in a newer layout's enrollment is kept apart: its own must all be
    # known, or they would be written twice.
    from cjo.storage.codec import _ENROLLMENT_FIELDS, _enrollment

    every = _every_field()
    assert all(getattr(every, a.name) not in (None, {}, 0) or a.name in
               ("ended_at", "end_reason") for a in attrs.fields(Enrollment))
    assert every.merged_passes and every.carried_sends  # the two ``_rare`` holds
    assert set(_enrollment(every)) == _ENROLLMENT_FIELDS


#: The keys an enrollment holds in each record layout, as its cjos wrote them. A cjo keeps the
#: keys it does not know inside an enrollment only in a record of a newer layout, so a key
#: added without a new layout is dropped by every cjo of the layout it was added to.
_LAYOUT_KEYS: dict[int, frozenset[str]] = {1: frozenset({
    "id", "j", "ver", "in", "s", "sin", "k", "w", "x", "conv", "t", "ctx", "vis", "p", "hold",
    "rr", "mrg",
})}
_LAYOUT_KEYS[2] = _LAYOUT_KEYS[1] | {"cg"}
_LAYOUT_KEYS[3] = _LAYOUT_KEYS[2] | {"cs"}


def test_an_enrollment_key_is_written_only_in_a_layout_whose_cjos_all_know_it() -> None:
    # "cs" was first written in layout 2 records, and a layout-2 cjo from before it wrote
    # those records back without it (the messages a migration carried were forgotten).
    from cjo.storage.codec import _enrollment

    assert set(_enrollment(_every_field())) <= _LAYOUT_KEYS[RECORD_LAYOUT]
    assert max(_LAYOUT_KEYS) == RECORD_LAYOUT, "a new layout lists its keys here"


def test_an_enrollments_group_at_entry_is_left_out_only_when_not_known() -> None:
    # In the control group (1), treated (0), not known (left out: an enrollment an older cjo
    # wrote, counted with the customer's group at the goal).
    import json

    from cjo.abc import decode_state, encode_state

    t = datetime(2026, 1, 1, tzinfo=UTC)
    state = CustomerState("c1", t, 1, enrollments=[
        Enrollment(f"e{n}", "j", 1, "c1", t, control=control)
        for n, control in enumerate((True, False, None))
    ])
    data = json.loads(encode_state(state))
    assert [e.get("cg", "absent") for e in data["enr"]] == [1, 0, "absent"]
    assert decode_state(json.dumps(data), "c1") == state


def test_the_enrollments_of_a_layout_1_record_have_their_group_at_entry_unknown() -> None:
    import json

    from cjo.abc import decode_state, encode_state

    t = datetime(2026, 1, 1, tzinfo=UTC)
    state = CustomerState("c1", t, 1, enrollments=[
        Enrollment("e0", "j", 1, "c1", t, control=True), Enrollment("e1", "j", 1, "c1", t)
    ])
    data = json.loads(encode_state(state))
    assert data["v"] == RECORD_LAYOUT
    old = {**data, "v": 1, "enr": [{k: v for k, v in e.items() if k != "cg"}
                                    for e in data["enr"]]}
    read = decode_state(json.dumps(old), "c1")
    assert [e.control for e in read.enrollments] == [None, None]
    written = json.loads(encode_state(read))
    assert written["v"] == RECORD_LAYOUT and [e.get("cg", "absent") for e in written["enr"]] == [
        "absent", "absent"]
