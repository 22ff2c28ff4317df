"""Every example runs, and says what the docs say it says."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "quickstart.py": [
        "bob bought after 2 h: converted",
        "Mon 13:00 email -> ann",
        "Tue 13:00 sms   -> ann",
        "ann: completed at Tue 13:00",
    ],
    "custom_channel.py": [
        "after the first attempt: 0 posted",
        "retried 1",
        "A-1001",
        '"to": "https://hooks.example.invalid/acme"',
    ],
    "engagement.py": ["ann: 1 SMS reminder", "bob: 0 SMS reminders"],
    "from_json.py": [
        "email ada: {'subject': 'Three tips for pros', 'text': 'One: invite your team.'}",
        "push  max:",
    ],
}


def test_every_example_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, capsys):
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    out = capsys.readouterr().out
    for line in EXPECTED[name]:
        assert line in out
