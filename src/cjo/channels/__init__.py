"""Delivery channels: the host's adapters, and two that ship with cjo."""
