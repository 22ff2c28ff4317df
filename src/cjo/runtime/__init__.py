"""The decision core: pure functions of (definitions, customer state, event or time)."""
