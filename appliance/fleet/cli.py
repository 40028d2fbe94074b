"""`appliance fleet`: the producer's view and commands, over the broker.

    appliance fleet status [--json]
    appliance fleet live BOX | stop BOX --confirm | preflight BOX | usage-reset BOX [--link L]
    appliance fleet exporter --listen 127.0.0.1:9310

The broker and credentials come from --config FILE (its [fleet] table, the same keys
as a box's) and the options, which win.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tomllib
from pathlib import Path

from appliance.errors import ApplianceError, ConfigError

OPTIONS = ("broker", "topic_prefix", "ca_file", "cert_file", "key_file", "username")


def add_parser(sub) -> None:
    sp = sub.add_parser("fleet", help="the producer's view of every box on the broker, and their commands")
    fsub = sp.add_subparsers(dest="fleet_cmd", required=True)

    def common(p):
        p.add_argument("--config", help="a file with a [fleet] table (broker, credentials, topic_prefix)")
        p.add_argument("--broker", help="mqtts://HOST:8883 or wss://HOST/PATH")
        p.add_argument("--topic-prefix", dest="topic_prefix")
        p.add_argument("--ca-file", dest="ca_file")
        p.add_argument("--cert-file", dest="cert_file")
        p.add_argument("--key-file", dest="key_file")
        p.add_argument("--username")
        p.add_argument("--password-file", help="the password, read from a file (or APPLIANCE_FLEET_PASSWORD)")
        p.add_argument("--insecure", action="store_true", default=None, help="allow plain mqtt:// to another host")
        p.add_argument("--json", action="store_true")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker and the box")
        p.set_defaults(func=run)

    common(fsub.add_parser("status", help="one line per box: state, bitrate, links, power, age of its report"))
    for name, text in (("live", "take BOX live"), ("stop", "stop BOX's show (needs --confirm)"),
                       ("preflight", "run BOX's pre-flight"), ("usage-reset", "zero BOX's data count")):
        p = fsub.add_parser(name, help=text)
        p.add_argument("box")
        common(p)
        if name == "stop":
            p.add_argument("--confirm", action="store_true", help="yes, stop the show")
        if name == "preflight":
            p.add_argument("--seconds", type=float, default=12.0)
        if name == "usage-reset":
            p.add_argument("--link")
    p = fsub.add_parser("exporter", help="serve every box's telemetry as one Prometheus /metrics")
    p.add_argument("--listen", default="127.0.0.1:9310", help="ADDR:PORT (default 127.0.0.1:9310)")
    common(p)


def settings(args):
    """A FleetSection from the file and the options (validated: the same rules as a box's)."""
    from pydantic import ValidationError

    from appliance.config import FleetSection
    from appliance.configerrors import describe

    data: dict = {}
    if args.config:
        try:
            data = dict(tomllib.loads(Path(args.config).read_text()).get("fleet", {}))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError([f"{args.config}: {e}"]) from None
    for key in OPTIONS:
        if getattr(args, key, None):
            data[key] = getattr(args, key)
    if args.insecure:
        data["insecure"] = True
    password = os.environ.get("APPLIANCE_FLEET_PASSWORD")
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().strip()
        except OSError as e:
            raise ConfigError([f"--password-file: {e}"]) from None
    if password:
        data["password"] = password
    for box_only in ("enabled", "box", "telemetry_seconds"):  # (a box's keys: a producer has no use for them)
        data.pop(box_only, None)
    if not data.get("broker"):
        raise ConfigError(["fleet: no broker: give --broker mqtts://HOST:8883 or --config FILE with [fleet] broker"])
    origin = args.config or "the command line"
    try:
        return FleetSection.model_validate({**data, "enabled": True})
    except ValidationError as e:
        raise ConfigError([describe(err, {(): origin}, FleetSection) for err in e.errors()]) from None


def run(args) -> int:
    from appliance.fleet import producer

    try:
        s = settings(args)
        if args.fleet_cmd == "status":
            boxes = asyncio.run(producer.read(s, args.timeout))
            if args.json:
                print(json.dumps({n: {"online": b.online, "state": b.state, "telemetry": b.telemetry,
                                      **({"errors": b.errors} if b.errors else {})}
                                  for n, b in sorted(boxes.items())}, indent=2))
            else:
                print(producer.table(boxes) if boxes else f"no box reports under {s.topic_prefix}/ on {s.broker}")
            return 0
        if args.fleet_cmd == "exporter":
            from appliance.fleet.exporter import Exporter

            host, _, port = args.listen.rpartition(":")
            if not port.isdigit():
                raise ConfigError([f"--listen: {args.listen!r} is not ADDR:PORT"])
            try:
                asyncio.run(Exporter(s).serve(host.strip("[]") or "127.0.0.1", int(port)))
            except KeyboardInterrupt:
                pass
            return 0
        extra = {"confirm": True} if getattr(args, "confirm", False) else {}
        timeout = args.timeout
        if args.fleet_cmd == "preflight":
            extra["seconds"] = args.seconds
            timeout = max(timeout, args.seconds * 2 + 30)
        if getattr(args, "link", None):
            extra["link"] = args.link
        answer = asyncio.run(producer.command(s, args.box, args.fleet_cmd, timeout, **extra))
    except ApplianceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer, indent=2))
    elif answer.get("ok"):
        shown = answer.get("state") or answer.get("report", {}).get("verdict") or "done"
        print(f"{args.box}: {args.fleet_cmd}: {shown}")
    else:
        print(f"{args.box}: {args.fleet_cmd} refused: {answer.get('error')}", file=sys.stderr)
    return 0 if answer.get("ok") else 1
