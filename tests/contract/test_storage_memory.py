"""The storage contract on InMemoryStorage."""

from __future__ import annotations

from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage
from cjo.testing import StorageContract


class TestInMemoryStorage(StorageContract):
    supports_concurrency = True  # one lock held for the whole customer transaction

    def make_storage(self) -> Storage:
        return InMemoryStorage()
