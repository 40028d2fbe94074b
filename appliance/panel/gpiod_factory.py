"""A gpiozero pin factory over libgpiod, for boards gpiozero does not know.

gpiozero's hardware factories need a Raspberry Pi revision and refuse to start
on a Jetson. This factory drives any GPIO character device (/dev/gpiochipN)
through the `gpiod` package (libgpiod v2), so the same panel code runs there.
Pins are named by their line offset on the chip (as the profile gives them):
`pin_factory.pin(144)` is line 144 of the chip.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from gpiozero.exc import PinInvalidFunction, PinInvalidPin, PinInvalidPull, PinSetInput
from gpiozero.pins import BoardInfo, Factory, HeaderInfo, PinInfo
from gpiozero.pins.pi import PiPin

from appliance import heartbeat

CONSUMER = "appliance"


def open_chip_label(path: str) -> str:
    """The chip's label and size (what `appliance probe` reports); raises if it cannot open."""
    import gpiod

    with gpiod.Chip(path) as chip:
        info = chip.get_info()
        return f"{info.name} ({info.label}, {info.num_lines} lines)"


class GpiodFactory(Factory):
    def __init__(self, chip: str = "/dev/gpiochip0"):
        super().__init__()
        import gpiod

        self._gpiod = gpiod
        self.chip_path = chip
        try:
            with gpiod.Chip(chip) as c:
                info = c.get_info()
        except OSError as e:  # libgpiod's errors do not name the chip
            raise type(e)(e.errno, f"{chip}: {e.strerror}") from None
        self.label, self.num_lines = info.label, info.num_lines
        pins = {
            n: PinInfo(number=n, name=f"GPIO{n}", names=frozenset({n, str(n), f"GPIO{n}"}), pull="",
                       row=n + 1, col=1, interfaces=frozenset({"gpio"}))
            for n in range(self.num_lines)
        }
        header = HeaderInfo(name=info.name, rows=self.num_lines, columns=1, pins=pins)
        self._board = BoardInfo(
            revision=info.name, model=info.label, pcb_revision="", released="", soc=info.label,
            manufacturer="", memory=0, storage="", usb=0, usb3=0, ethernet=0, eth_speed=0, wifi=False,
            bluetooth=False, csi=0, dsi=0, headers={info.name: header}, board="")
        self._pins: dict[int, GpiodPin] = {}

    def _get_board_info(self):
        return self._board

    def ticks(self):
        return time.monotonic()

    def ticks_diff(self, later, earlier):
        return later - earlier

    def pin(self, name):
        for _, info in self._board.find_pin(name):
            pin = self._pins.get(info.number)
            if pin is None:
                pin = self._pins[info.number] = GpiodPin(self, info)
            return pin
        raise PinInvalidPin(f"{name!r} is not a line of {self.chip_path} ({self.num_lines} lines)")

    def close(self):
        for pin in self._pins.values():
            pin.close()
        self._pins.clear()
        super().close()


class GpiodPin(PiPin):
    """One line, requested from the kernel as its function requires."""

    _BIAS = {"up": "PULL_UP", "down": "PULL_DOWN", "floating": "DISABLED"}
    _EDGE = {"both": "BOTH", "rising": "RISING", "falling": "FALLING", "none": "NONE"}

    def __init__(self, factory: GpiodFactory, info):
        super().__init__(factory, info)
        self.offset = info.number
        self._function = "input"
        self._pull = "floating"
        self._edges = "both"
        self._state = False
        self._request = None
        self._watcher: threading.Thread | None = None
        self._watching = threading.Event()

    # gpiod plumbing -----------------------------------------------------------------------

    def _settings(self):
        gpiod = self.factory._gpiod
        from gpiod.line import Bias, Direction, Edge, Value

        if self._function == "output":
            return gpiod.LineSettings(direction=Direction.OUTPUT,
                                      output_value=Value.ACTIVE if self._state else Value.INACTIVE)
        return gpiod.LineSettings(
            direction=Direction.INPUT, bias=getattr(Bias, self._BIAS[self._pull]),
            edge_detection=getattr(Edge, self._EDGE[self._edges]) if self._watching.is_set() else Edge.NONE,
            debounce_period=timedelta())

    def _configure(self) -> None:
        if self._request is None:
            self._request = self.factory._gpiod.request_lines(
                self.factory.chip_path, consumer=CONSUMER, config={self.offset: self._settings()})
        else:
            self._request.reconfigure_lines({self.offset: self._settings()})

    def close(self):
        self._disable_event_detect()
        if self._request is not None:
            self._request.release()
            self._request = None

    # gpiozero's Pin interface ------------------------------------------------------------------

    def _get_function(self):
        return self._function

    def _set_function(self, value):
        if value not in ("input", "output"):
            raise PinInvalidFunction(f"invalid function {value!r} for {self!r}: input or output only")
        self._function = value
        self._configure()

    def _get_state(self):
        if self._request is None:
            self._configure()
        from gpiod.line import Value

        return self._request.get_value(self.offset) == Value.ACTIVE

    def _set_state(self, value):
        if self._function != "output":
            raise PinSetInput(f"cannot set the state of input pin {self!r}")
        from gpiod.line import Value

        self._state = bool(value)
        self._request.set_value(self.offset, Value.ACTIVE if self._state else Value.INACTIVE)

    def _get_pull(self):
        return self._pull

    def _set_pull(self, value):
        if self._function != "input":
            raise PinInvalidPull(f"cannot set pull on non-input pin {self!r}")
        if value not in self._BIAS:
            raise PinInvalidPull(f"invalid pull {value!r} for {self!r}")
        self._pull = value
        self._configure()

    def _get_bounce(self):
        return None  # debounce is the panel's own (buttons.py)

    def _set_bounce(self, value):
        if value is not None:
            raise PinInvalidFunction("the gpiod factory leaves debouncing to the caller")

    def _get_edges(self):
        return self._edges

    def _set_edges(self, value):
        self._edges = value
        if self._function == "input":
            self._configure()

    def _enable_event_detect(self):
        self._watching.set()
        self._configure()
        self._watcher = threading.Thread(target=self._watch, name=f"gpiod-line-{self.offset}", daemon=True)
        self._watcher.start()

    def _disable_event_detect(self):
        if self._watching.is_set():
            self._watching.clear()
            if self._watcher is not None and self._watcher is not threading.current_thread():
                self._watcher.join()
            self._watcher = None
            if self._request is not None:
                self._configure()

    def _watch(self):
        from gpiod.edge_event import EdgeEvent

        with heartbeat.beating(f"gpiod-line-{self.offset}", 10.0) as hb:
            while self._watching.is_set():
                hb.beat()
                if not self._request.wait_edge_events(timedelta(milliseconds=100)):
                    continue
                for event in self._request.read_edge_events():
                    rising = event.event_type is EdgeEvent.Type.RISING_EDGE
                    self._call_when_changed(event.timestamp_ns / 1e9, rising)
