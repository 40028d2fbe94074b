"""Uplink intelligence: modem health, link states and policies, adaptive bitrate, pre-flight."""
