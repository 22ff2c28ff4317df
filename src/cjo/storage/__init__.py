"""Storage adapters. ``import cjo`` imports none of the optional drivers."""
