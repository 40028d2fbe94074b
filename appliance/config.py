"""Configuration: the schema, the layering and the masking of secrets.

Three layers, each overriding the one before: the package defaults (the schema
below), the board's hardware profile (hw_profiles/NAME.toml) and the site file
(/etc/appliance/appliance.toml). The merged result is validated once, and every
problem is reported together, each naming the file that set the key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)

from appliance.codecs import Codec, codec_of
from appliance.configerrors import describe
from appliance.configlayers import merge_layers
from appliance.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/appliance/appliance.toml")
Port = Annotated[int, Field(ge=1, le=65535)]
GpioPin = Annotated[int, Field(ge=0, le=511)]


class Section(BaseModel):
    # Unknown keys are errors: a typo must never be silently ignored on a show day.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoardSection(Section):
    name: str = "sim"
    description: str = ""
    # Substrings of /proc/device-tree/model (or DMI product/vendor on x86) that
    # select this profile.
    match: list[str] = []
    arch: list[str] = []
    notes: str = ""


class DeviceSection(Section):
    name: str = Field("appliance", min_length=1, max_length=63)


class PathsSection(Section):
    # Unset means: systemd's STATE_DIRECTORY / RUNTIME_DIRECTORY, else the FHS places.
    state_dir: Path | None = None
    runtime_dir: Path | None = None
    recordings: Path | None = None


class LogSection(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # While live, the steady figures (bitrate, uplink shares, recording) go to the journal
    # as one line this often; changes of state and faults are logged as they happen.
    summary_seconds: float = Field(60.0, ge=1, le=3600)


class VideoSection(Section):
    source: Literal["v4l2", "testsrc", "file"] = "testsrc"
    device: str = ""
    input_format: Literal["auto", "mjpeg", "yuyv422", "nv12"] = "auto"
    width: int = Field(1280, ge=160, le=3840)
    height: int = Field(720, ge=120, le=2160)
    fps: int = Field(30, ge=1, le=60)
    file: Path | None = None


class AudioTrack(Section):
    name: str = Field(min_length=1)
    device: str = ""
    # 1-based channel numbers on the capture device.
    channels: list[Annotated[int, Field(ge=1, le=64)]] = [1, 2]


class AudioSection(Section):
    sample_rate: Literal[48000] = 48000
    tracks: list[AudioTrack] = [AudioTrack(name="program", device="default", channels=[1, 2])]
    silence_dbfs: float = Field(-60.0, ge=-120.0, le=0.0)
    silence_seconds: float = Field(10.0, gt=0, le=3600)


class EncoderRung(Section):
    # An FFmpeg encoder (through PyAV) or, with backend = "gstreamer", a GStreamer element
    # run in a child process. ("codec" is its old name here, still read.)
    encoder: str = Field(min_length=1, validation_alias=AliasChoices("encoder", "codec"))
    backend: Literal["pyav", "gstreamer"] = "pyav"
    hardware: bool = False
    # Device node the hardware encoder needs (checked by `appliance probe`).
    device: str = ""
    pix_fmt: str = "yuv420p"
    max_width: int = Field(3840, ge=160)
    max_height: int = Field(2160, ge=120)
    max_fps: int = Field(60, ge=1)
    level: str = ""
    # The encoder does not repeat SPS/PPS before keyframes: insert them.
    insert_sps_pps: bool = False
    # FFmpeg options, or the GStreamer element's properties.
    options: dict[str, str] = {}

    @property
    def codec(self) -> str:
        return codec_of(self.encoder) or "h264"

    @model_validator(mode="after")
    def _known_codec(self):
        if codec_of(self.encoder) is None:
            raise ValueError(f"cannot tell from its name whether {self.encoder!r} makes H.264 or H.265")
        return self


class EncoderSection(Section):
    # H.265 carries the same picture in roughly half the bitrate; a profile whose board
    # encodes it in hardware makes it the default. The ladder's rungs for the show's
    # codec come first; an H.265 show falls back to its H.264 rungs (from a keyframe on).
    codec: Codec = "h264"
    ladder: list[EncoderRung] = [EncoderRung(encoder="libx264", options={"preset": "veryfast", "tune": "zerolatency"})]
    bitrate_kbps: int = Field(4000, ge=200, le=50000)
    min_bitrate_kbps: int = Field(800, ge=100, le=50000)
    keyframe_seconds: float = Field(1.0, ge=0.25, le=10.0)
    audio_bitrate_kbps: int = Field(128, ge=32, le=512)

    def rungs(self) -> list[EncoderRung]:
        """The ladder in the order the show tries it."""
        own = [r for r in self.ladder if r.codec == self.codec]
        return own + ([r for r in self.ladder if r.codec == "h264"] if self.codec == "h265" else [])

    @model_validator(mode="after")
    def _a_rung_for_the_codec(self):
        if not any(r.codec == self.codec for r in self.ladder):
            made = sorted({r.codec for r in self.ladder})
            raise ValueError(f"codec is {self.codec!r} but no rung of the ladder makes it (they make {', '.join(made)}): "
                             f"add one, or set codec = \"{made[0]}\"")
        return self


PinBackend = Literal["none", "mock", "lgpio", "rpigpio", "native", "gpiod"]


class PanelLeds(Section):
    status: GpioPin | None = None
    live: GpioPin | None = None
    link_wired: GpioPin | None = None
    link_cell: GpioPin | None = None
    power: GpioPin | None = None
    audio: GpioPin | None = None


class PanelButtons(Section):
    go: GpioPin | None = None
    fn: GpioPin | None = None


class PanelSection(Section):
    backend: PinBackend = "mock"
    # Only for the gpiod backend: the chip the line offsets below belong to.
    chip: str = "/dev/gpiochip0"
    pwm: bool = False
    active_high: bool = True
    leds: PanelLeds = PanelLeds()
    buttons: PanelButtons = PanelButtons()


class SerialSection(Section):
    # Stable names from udev/99-appliance.rules; "sim" starts the built-in
    # simulator on a pty; empty means not fitted.
    ups: str = ""
    battery: str = ""
    modem_at: str = ""


class ThermalSection(Section):
    sensors: list[str] = []
    # Pi firmware's throttled flags (under-voltage, frequency capped, throttled).
    throttled: str = ""
    warn_celsius: float = Field(80.0, ge=30, le=120)


class RecordingSection(Section):
    enabled: bool = True
    segment_seconds: float = Field(10.0, ge=1.0, le=600.0)
    # Oldest sessions are deleted below this much free space; if that is not
    # enough, recording stops with a clear event instead of filling the disk.
    min_free_mb: int = Field(500, ge=1)
    warn_free_mb: int = Field(2000, ge=1)


# srt://HOST:PORT[?streamid=...&latency=...] (an SRT listener: MediaMTX, SRS, srt-live-transmit)
# HOST: a name, an IPv4 address or an [IPv6] address in brackets
SRT_URL = r"srt://([^\s/?#:\[\]]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}(\?\S*)?$"


class PopSection(Section):
    # One edge PoP: a relay (with stream.bond) or an SRT ingest, and what it needs.
    url: str = Field(pattern="^" + SRT_URL)
    name: str = Field("", max_length=63)  # for people (status, page, journal); default: its host
    stream_id: SecretStr = SecretStr("")
    passphrase: SecretStr = SecretStr("")
    relay_secret: SecretStr = SecretStr("")

    @property
    def label(self) -> str:
        return self.name or self.url.split("://", 1)[1].split("?", 1)[0].rsplit(":", 1)[0].strip("[]")


class StreamSection(Section):
    enabled: bool = False
    url: str = Field("", pattern="^$|^" + SRT_URL)  # one PoP; stream.relays for several
    stream_id: SecretStr = SecretStr("")
    passphrase: SecretStr = SecretStr("")
    # SRT latency: a number, or "auto": the lowest the last pre-flight's links allow with
    # margin for losing one (uplinks/latency.py), between latency_min_ms and latency_max_ms.
    latency_ms: int | Literal["auto"] = 1000
    latency_min_ms: int = Field(120, ge=20, le=8000)
    latency_max_ms: int = Field(2000, ge=20, le=8000)
    # Bond every uplink through an SRTLA relay (`appliance relay`, srtla_rec) at url.
    bond: bool = False
    # Interfaces to bond ("eth0", "wwan0"), "NAME@ADDRESS" to pin an address, or "auto":
    # every interface that is up with an IPv4 address (loopback excepted).
    uplinks: list[Annotated[str, Field(min_length=1)]] = ["auto"]
    relay_secret: SecretStr = SecretStr("")
    # Follow the links: the encoder's bitrate moves between encoder.min_bitrate_kbps
    # and encoder.bitrate_kbps; below the minimum, the voice lane.
    adaptive_bitrate: bool = True
    # Edge PoPs, in the order to fall back through; pre-flight ranks them by what it measures.
    relays: list[PopSection] = []

    @field_validator("latency_ms", mode="before")
    @classmethod
    def _latency(cls, v):
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 20 <= v <= 8000):
            return v
        raise ValueError('a number of milliseconds (20 to 8000) or "auto"')

    @model_validator(mode="after")
    def _url_when_enabled(self):
        if self.url and self.relays:
            raise ValueError("stream: give stream.url (one PoP) or stream.relays (several), not both")
        if self.enabled and not self.pops():
            raise ValueError("stream.enabled = true needs stream.url (srt://HOST:PORT) or stream.relays")
        if self.latency_min_ms > self.latency_max_ms:
            raise ValueError("stream.latency_min_ms is above stream.latency_max_ms")
        labels = [p.label for p in self.relays]
        if len(set(labels)) != len(labels):
            raise ValueError(f"stream.relays: two PoPs named alike ({', '.join(labels)}): give each a name")
        return self

    def pops(self) -> list[PopSection]:
        """The PoPs: stream.relays, or the one stream.url names (its secrets beside it)."""
        if self.relays or not self.url:
            return list(self.relays)
        return [PopSection(url=self.url, stream_id=self.stream_id, passphrase=self.passphrase,
                           relay_secret=self.relay_secret)]

    def at(self, pop: PopSection) -> "StreamSection":
        """This stream aimed at one PoP: what the SRT output and pre-flight dial."""
        return self.model_copy(update={"url": pop.url, "stream_id": pop.stream_id, "passphrase": pop.passphrase,
                                       "relay_secret": pop.relay_secret, "relays": []})


class RtmpSection(Section):
    """A direct push to a platform (YouTube, Twitch) when there is no SRT ingest."""

    enabled: bool = False
    # rtmp://HOST[:PORT]/APP or rtmps://...  e.g. rtmps://a.rtmps.youtube.com/live2
    url: str = Field("", pattern=r"^$|^rtmps?://[^\s/?#]+/\S+$")
    # Appended to url as its last path element; kept out of logs, status and argv.
    stream_key: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _url_when_enabled(self):
        if self.enabled and not self.url:
            raise ValueError("rtmp.enabled = true needs rtmp.url (rtmp://HOST/APP or rtmps://...)")
        return self

    def full_url(self) -> str:
        key = self.stream_key.get_secret_value()
        return f"{self.url.rstrip('/')}/{key}" if key else self.url


class ModemSection(Section):
    # "at": our AT client on serial.modem_at; "modemmanager": ask mmcli (when
    # ModemManager owns the port); "none": no radio figures.
    source: Literal["at", "modemmanager", "none"] = "at"
    # The uplink interface whose radio this is ("wwan0"): its health follows the radio.
    interface: str = ""
    modemmanager_id: str = "any"
    poll_seconds: float = Field(2.0, ge=0.2, le=60)


class LinksSection(Section):
    # "bond": every uplink carries traffic by its health; "failover": the primary
    # carries everything, the others stay registered on standby.
    policy: Literal["bond", "failover"] = "bond"
    primary: str = ""
    # Failover: traffic returns to the primary after it has been healthy this long.
    hold_seconds: float = Field(30.0, ge=0, le=3600)
    # Data caps for metered links, in MB: { wwan0 = 20000 }. Reached -> standby.
    caps_mb: dict[str, Annotated[int, Field(ge=1)]] = {}


class ApiSection(Section):
    bind: str = "127.0.0.1"
    port: Port = 8080
    # "": the daemon makes one at first start (the state directory's api.token)
    token: SecretStr = SecretStr("")
    # Names the page is reached by besides IP addresses, this host's own names and
    # device.name(.local): a reverse proxy's, a DNS name. Any other Host is refused.
    hosts: list[str] = []


class PowerSection(Section):
    poll_seconds: float = Field(2.0, ge=0.2, le=60)
    # A source is stale after this many failed polls in a row (NUT's rule: 5).
    stale_polls: int = Field(5, ge=1, le=100)
    low_percent: float = Field(30.0, ge=0, le=100)
    critical_percent: float = Field(10.0, ge=0, le=100)
    low_minutes: float = Field(20.0, ge=0)
    critical_minutes: float = Field(5.0, ge=0)
    # Critical: wait this long for mains to return before stopping and powering off.
    grace_seconds: float = Field(15.0, ge=0, le=600)
    # A source silent this long while it was on battery counts as critical (NUT's DEADTIME).
    dead_seconds: float = Field(15.0, ge=1, le=600)
    # Low battery: cap the encoder at this bitrate to save power.
    shed_bitrate_kbps: int = Field(1500, ge=100, le=50000)
    # Before powering off, tell the UPS to cut its output after this many
    # minutes and restore it when mains return (0: leave the UPS alone).
    ups_off_delay_minutes: float = Field(0.0, ge=0, le=10)
    # A Q1 UPS's nominal battery voltage (12, 24, 36, 48 ...), for its charge from the battery
    # voltage when it does not answer F (NUT's override.battery.voltage.nominal); 0: from F.
    ups_battery_volts: float = Field(0.0, ge=0, le=480)
    # A UPS managed by NUT: "upsname@host[:port]" ("" = none).
    nut: str = Field("", pattern=r"^$|^[A-Za-z0-9_.-]+@[A-Za-z0-9_.:-]+$")
    # The board's own battery (psutil): "auto" uses it when the kernel has one.
    board_battery: Literal["auto", "yes", "no"] = "auto"
    shutdown_command: list[str] = ["systemctl", "poweroff"]
    # A shutdown command that fails is run again this long after (twice at most, while not live).
    shutdown_retry_seconds: float = Field(15.0, ge=1, le=600)


class FleetSection(Section):
    # Report to and take commands from an MQTT broker (docs/fleet.md). Off by default: the
    # box works fully without it, and a broker that is down never holds anything up.
    enabled: bool = False
    broker: str = ""  # mqtts://host:8883, wss://host/path; mqtt:// only for a broker on this box
    insecure: bool = False  # allow mqtt:// or ws:// to another host: passwords and commands in clear
    ca_file: Path | None = None  # the broker's CA (else the system's)
    cert_file: Path | None = None  # a client certificate, with key_file
    key_file: Path | None = None
    username: str = ""
    password: SecretStr = SecretStr("")
    topic_prefix: str = Field("appliance", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    box: str = Field("", pattern=r"^$|^[A-Za-z0-9_.-]{1,63}$")  # "" = device.name
    telemetry_seconds: float = Field(5.0, ge=1, le=3600)

    @model_validator(mode="after")
    def _safe(self):
        from appliance.hostnames import parse_broker_url

        if not self.enabled and not self.broker:
            return self
        if not self.broker:
            raise ValueError("fleet.enabled needs fleet.broker (mqtts://HOST:8883)")
        broker = parse_broker_url(self.broker)  # (a ConfigError: says what to write)
        if not broker.tls and not broker.loopback and not self.insecure:
            raise ValueError(f"fleet.broker {self.broker!r} is not encrypted: use mqtts:// or wss://, or set "
                             "fleet.insecure = true to send the password and accept commands in clear")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("fleet.cert_file and fleet.key_file go together")
        return self


class Config(Section):
    board: BoardSection = BoardSection()
    device: DeviceSection = DeviceSection()
    paths: PathsSection = PathsSection()
    log: LogSection = LogSection()
    video: VideoSection = VideoSection()
    audio: AudioSection = AudioSection()
    encoder: EncoderSection = EncoderSection()
    panel: PanelSection = PanelSection()
    serial: SerialSection = SerialSection()
    thermal: ThermalSection = ThermalSection()
    recording: RecordingSection = RecordingSection()
    stream: StreamSection = StreamSection()
    rtmp: RtmpSection = RtmpSection()
    modem: ModemSection = ModemSection()
    links: LinksSection = LinksSection()
    api: ApiSection = ApiSection()
    power: PowerSection = PowerSection()
    fleet: FleetSection = FleetSection()

    @model_validator(mode="after")
    def _rtmp_carries_h264(self):
        # FFmpeg's FLV muxer (PyAV's, 6.1 and later) can write H.265 as enhanced RTMP, but
        # the ingests that read it are few and not ours to test (nginx-rtmp reads none), and
        # a server that cannot drops the stream without a word: refuse it here, plainly.
        if self.rtmp.enabled and self.encoder.codec == "h265":
            raise ValueError('rtmp: RTMP carries H.264 only here; with encoder.codec = "h265", stream over SRT '
                             '(stream.url) and turn rtmp off, or set encoder.codec = "h264"')
        box = self.fleet.box or self.device.name
        if self.fleet.enabled and not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", box):  # (one MQTT topic level)
            raise ValueError(f"fleet: the box name {box!r} (device.name) cannot be a topic level: set fleet.box "
                             "to letters, digits, '.', '_' or '-'")
        return self


# --- loading --------------------------------------------------------------

def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied (run as root or add yourself to the appliance group)"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None


def validate(layers: list[tuple[str, dict[str, Any]]]) -> Config:
    """Merge the layers and validate; raise ConfigError listing every problem."""
    merged, origins = merge_layers(layers)
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        raise ConfigError([describe(err, origins, Config) for err in e.errors()]) from None


def load(config_path: Path | None, profile: dict[str, Any], profile_origin: str) -> Config:
    """Defaults <- hardware profile <- site file (if it exists or was named)."""
    layers = [(profile_origin, profile)]
    if config_path is not None:
        layers.append((str(config_path), read_toml(config_path)))
    return validate(layers)
