"""Tools for tests (needs pytest; ``import cjo`` does not).

``run_until`` and ``advance`` move an engine's ``ManualClock`` as a worker that is never late
would: each wake-up, schedule occurrence and outbox delivery at its own instant.

``StorageContract`` (``cjo.testing.storage``) checks everything the engine relies on from a
``Storage``; ``ChannelContract`` (``cjo.channels.contract``) checks a ``Channel``: result types,
the classification of failures, idempotency keys. Subclass one in your own tests.
"""

from __future__ import annotations

import sys

from cjo.errors import missing_extra

try:
    import pytest
except ImportError as exc:  # pytest is the suites' runner, not a dependency of cjo itself
    raise missing_extra("cjo.testing", "pytest", "testing", exc) from exc

# pytest's detailed assertion messages (the values an assert compared) come from rewriting a
# module's asserts as it is imported: asked for here, before the suites' first import, an
# adapter's author sees what their adapter returned instead of a bare AssertionError.
for _suite in ("cjo.testing.storage", "cjo.channels.contract"):
    if _suite not in sys.modules:  # too late to rewrite (and pytest would warn)
        pytest.register_assert_rewrite(_suite)

# The suites are imported after the request above, on purpose.
from cjo.channels.contract import ChannelContract  # noqa: E402
from cjo.testing.storage import (  # noqa: E402
    CART_CONTENT,
    StorageContract,
    abandoned_cart_journey,
)
from cjo.testing.worker import advance, run_until  # noqa: E402

__all__ = [
    "CART_CONTENT", "ChannelContract", "StorageContract", "abandoned_cart_journey", "advance",
    "run_until",
]
