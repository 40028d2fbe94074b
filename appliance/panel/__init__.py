"""The front panel: LEDs and buttons through gpiozero."""
