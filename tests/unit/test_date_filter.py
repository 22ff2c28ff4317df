"""The ``date`` filter formats a moment itself: every directive from the moment's own fields
and offset, so nothing depends on the machine's time zone, its locale, or what was rendered
before."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cjo.content.render import NOW_KEY, Renderer
from cjo.errors import RenderError
from cjo.model.content import ContentItem, Variant

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def render(renderer: Renderer, template: str, **values: object) -> str:
    item = ContentItem("c", (Variant("sms", {"text": template}),))
    return renderer.render(item, item.variants[0], {"profile": values, NOW_KEY: NOW})["text"]


def test_one_instant_in_different_offsets_renders_each_offset() -> None:
    renderer = Renderer()
    instant = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    template = "{{ profile.v | date: '%Y-%m-%d %H:%M %z %Z' }}"
    seen = [render(renderer, template, v=instant.astimezone(zone)) for zone in (
        timezone(timedelta(hours=2)), ZoneInfo("America/New_York"), ZoneInfo("Europe/Paris"),
        ZoneInfo("Asia/Kolkata"), UTC,
    )]
    assert seen == [
        "2026-07-01 10:00 +0200 UTC+02:00", "2026-07-01 04:00 -0400 EDT",
        "2026-07-01 10:00 +0200 CEST", "2026-07-01 13:30 +0530 IST",
        "2026-07-01 08:00 +0000 UTC",
    ]
    # One zone, two offsets (DST): each moment its own.
    paris = ZoneInfo("Europe/Paris")
    assert [render(renderer, "{{ profile.v | date: '%H:%M %:z %Z' }}", v=moment) for moment in (
        datetime(2026, 1, 5, 9, tzinfo=paris), datetime(2026, 7, 5, 9, tzinfo=paris),
        datetime(2026, 1, 5, 9, tzinfo=paris),
    )] == ["09:00 +01:00 CET", "09:00 +02:00 CEST", "09:00 +01:00 CET"]


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Australia/Sydney"])
def test_epoch_seconds_are_the_moments_own(monkeypatch: pytest.MonkeyPatch, zone: str) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        renderer = Renderer()
        moment = datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
        assert render(renderer, "{{ profile.v | date: '%s' }}", v=moment) == str(
            int(moment.timestamp()))
        # A naive datetime and a date are UTC, as naive text is.
        assert render(renderer, "{{ profile.v | date: '%s %z' }}",
                      v=datetime(1970, 1, 1, 0, 1)) == "60 +0000"
        assert render(renderer, "{{ profile.v | date: '%s' }}", v=date(1970, 1, 2)) == "86400"
        assert render(renderer, "{{ 'now' | date: '%s' }}") == str(int(NOW.timestamp()))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(("fmt", "expected"), [
    ("%Y-%m-%d %H:%M:%S", "2026-03-01 07:05:09"),
    ("%a %A %b %B %h", "Sun Sunday Mar March Mar"),
    ("%^a %^B", "SUN MARCH"),
    ("%d|%-d|%e|%_d|%-m|%j|%-j", "01|1| 1| 1|3|060|60"),
    ("%H %I %-I %k %l %p %P", "07 07 7  7  7 AM am"),
    ("%y %C %G %g %V %U %W %u %w", "26 20 2026 26 09 09 08 7 0"),
    ("%D|%F|%T|%R|%r", "03/01/26|2026-03-01|07:05:09|07:05|07:05:09 AM"),
    ("%c|%x|%X", "Sun Mar  1 07:05:09 2026|03/01/26|07:05:09"),
    ("%f %L %N", "004000 004 004000000"),
    ("%z %:z %Z", "-0500 -05:00 EST"),
    ("100%% %n%t", "100% \n\t"),
    ("no directives", "no directives"),
])
def test_each_directive(fmt: str, expected: str) -> None:
    moment = datetime(2026, 3, 1, 7, 5, 9, 4000, tzinfo=ZoneInfo("America/New_York"))
    assert render(Renderer(), "{{ profile.v | date: profile.f }}", v=moment, f=fmt) == expected


@pytest.mark.parametrize(("fmt", "what"), [
    ("%Q", "'%Q'"), ("%Y-%", "'%' at its end"), ("%5d", "'%5'"), ("%-", "'%-' at its end"),
])
def test_a_format_directive_it_does_not_know_fails_the_render(fmt: str, what: str) -> None:
    with pytest.raises(RenderError) as info:
        render(Renderer(), "{{ profile.v | date: profile.f }}", v=NOW, f=fmt)
    assert info.value.reason == f"date: the format {fmt!r} has {what}, which is not a directive"


def test_a_zone_without_an_offset_is_named_with_the_value_cut_short() -> None:
    value = "Sunday, 1 March 2026, 10:00:00.000000 EST"
    with pytest.raises(RenderError) as info:
        render(Renderer(), "{{ profile.v | date: '%H:%M' }}", v=value)
    assert info.value.reason == (
        "date: 'Sunday, 1 March 2026, 10:00:00.000000...' names the zone 'EST', which has no known "
        "offset; write the offset (-05:00) or UTC")
