"""Definitions: the immutable data a host declares (journeys, segments, content, taxonomy)."""
