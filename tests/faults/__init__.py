"""Crash, restart, replay: the engine and its storage converge to the state of a clean run."""
