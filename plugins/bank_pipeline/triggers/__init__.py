"""Triggers the custom operators defer to (imported by class path in the triggerer)."""
