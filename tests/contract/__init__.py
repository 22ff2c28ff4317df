"""The storage contract (cjo.testing.StorageContract) run against each adapter."""

import sys

import pytest

# Detailed assertion messages from the contract's asserts. Only possible before its first
# import; pytest warns (an error here) if asked too late, so ask only then.
if "cjo.testing" not in sys.modules:
    pytest.register_assert_rewrite("cjo.testing")
