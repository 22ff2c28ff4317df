"""The storage contract (cjo.testing.StorageContract) run against each adapter."""
