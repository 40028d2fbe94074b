"""The fleet: every box reports to and takes commands from an MQTT broker, and the
producer's `appliance fleet` reads and commands them all (docs/fleet.md)."""
