"""Venue capture appliance: capture, record and stream a show over bonded uplinks."""

__version__ = "0.1.0"
