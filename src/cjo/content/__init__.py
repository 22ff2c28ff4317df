"""Content rendering."""
