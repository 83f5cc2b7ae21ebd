"""Sensors: the EMR step sensor that says why a step failed."""
