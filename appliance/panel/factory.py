"""The pin factory for the profile's backend, always chosen explicitly.

gpiozero would otherwise guess, and on a Jetson its guesses refuse to start.
"""

from __future__ import annotations

from appliance.config import PanelSection
from appliance.errors import ComponentError


def make_pin_factory(panel: PanelSection):
    backend = panel.backend
    try:
        if backend == "mock":
            from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

            return MockFactory(pin_class=MockPWMPin if panel.pwm else MockPin)
        if backend == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory(chip=_chip_number(panel.chip))
        if backend == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        if backend == "native":
            from gpiozero.pins.native import NativeFactory

            return NativeFactory()
        if backend == "gpiod":
            from appliance.panel.gpiod_factory import GpiodFactory

            return GpiodFactory(panel.chip)
    except ImportError as e:
        raise ComponentError(f"panel backend {backend!r} is not installed: {e}") from None
    except ComponentError:
        raise
    except Exception as e:  # gpiozero raises many kinds when the hardware is absent
        raise ComponentError(f"panel backend {backend!r} cannot start on this board: {e}") from None
    raise ComponentError(f"panel backend {backend!r} has no pin factory")


def _chip_number(chip: str) -> int:
    digits = "".join(ch for ch in chip.rsplit("/", 1)[-1] if ch.isdigit())
    return int(digits or 0)
