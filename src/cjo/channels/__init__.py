"""Delivery channels: the host's adapters, and those that ship with cjo (console, recording,
SMTP email, signed webhook)."""
