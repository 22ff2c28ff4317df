"""Segments over event history: conditions that read what a customer did, profile rules that
events keep current, the bounded aggregates the customer record keeps for them, and real-time
segment membership with exact time-relative re-evaluation.

The public names are exported from ``cjo``; this package holds the implementation, one job per
module: ``history`` (the condition classes and builders), ``rules`` (profile rules),
``tracking`` (the aggregates), ``membership`` (what changes when, and what follows),
``trigger`` (the segment trigger kind).
"""
