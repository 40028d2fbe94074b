"""The `appliance` command: run the daemon, steer it, check its set-up."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from appliance import __version__
from appliance import config as cfgmod
from appliance import profiles
from appliance.paths import runtime_dir, state_dir
from appliance.errors import ApplianceError, ConfigError, ControlError

log = logging.getLogger("appliance")


def _config_path(arg: str | None) -> Path | None:
    """--config if given (it must exist), else the default file if it exists."""
    if arg:
        return Path(arg)
    return cfgmod.DEFAULT_CONFIG if cfgmod.DEFAULT_CONFIG.exists() else None


def load_config(args) -> tuple[cfgmod.Config, profiles.Profile]:
    profile = profiles.resolve(args.profile)
    config = cfgmod.load(_config_path(args.config), profile.data, str(profile.path))
    return config, profile


# --- commands ---------------------------------------------------------------------

def cmd_run(args) -> int:
    import faulthandler
    import signal

    from appliance.supervisor.systemd import setup_logging

    # `kill -USR1 <pid>` dumps every thread's stack: how to see where a hung box hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # systemd's watchdog ends a stuck box with SIGABRT: every thread's stack goes to the journal first.
    faulthandler.enable(all_threads=True)

    setup_logging("info")
    try:
        config, profile = load_config(args)
    except ApplianceError as e:
        log.error("cannot start: %s", e)
        return 78  # EX_CONFIG: systemd shows it, and Restart=on-failure won't help
    setup_logging(config.log.level)
    log.info("appliance %s starting: profile %s (%s), config %s", __version__, profile.name, profile.path,
             _config_path(args.config) or "defaults only")

    from appliance.app import build

    service = build(config, profile.name, sim_go_after=args.sim_go_after, console=sys.stdin.isatty())
    return asyncio.run(service.run())


def _socket(args) -> Path:
    if args.socket:
        return Path(args.socket)
    config = None
    try:
        config, _ = load_config(args)
    except ApplianceError:
        pass
    from appliance.supervisor.control import SOCKET_NAME

    return runtime_dir(config) / SOCKET_NAME


def cmd_status(args) -> int:
    from appliance.errors import ControlError
    from appliance.statusview import render
    from appliance.supervisor.control import request

    if args.json or not args.watch:
        answer = request(_socket(args), "status")
        if args.json:
            print(json.dumps(answer.get("status", answer), indent=2))
            return 0 if answer.get("ok") else 1
        if not answer.get("ok"):
            print(f"error: {answer.get('error')}", file=sys.stderr)
            return 1
        print(render(answer["status"]))
        return 0
    # --watch: redrawn in place with plain ANSI (home, clear to the end), fine over SSH.
    # Ctrl-C ends it even when started from something that ignores SIGINT (a background
    # job, nohup): Python installs no KeyboardInterrupt for a signal it inherits ignored.
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            try:
                answer = request(_socket(args), "status")
                text = render(answer["status"]) if answer.get("ok") else f"error: {answer.get('error')}"
            except ControlError as e:
                text = f"{e} (trying again)"
            stamp = time.strftime("%H:%M:%S")
            sys.stdout.write("\x1b[H\x1b[2J" + text + f"\n\n  {stamp}, every {args.watch:g} s; Ctrl-C to stop\n")
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 0


def cmd_preflight(args) -> int:
    from appliance.supervisor.control import request
    from appliance.uplinks.preflight import table

    if not args.json:
        print(f"pre-flight: a {args.seconds:g} s dry stream over each uplink ...", file=sys.stderr)
    answer = request(_socket(args), "preflight", timeout=args.seconds * 2 + 30, seconds=args.seconds)
    if not answer.get("ok"):
        print(f"error: {answer.get('error')}", file=sys.stderr)
        return 1
    report = answer["preflight"]
    print(json.dumps(report, indent=2) if args.json else table(report))
    return {"go": 0, "marginal": 2}.get(report["verdict"], 3)


def cmd_usage_reset(args) -> int:
    from appliance.supervisor.control import request

    answer = request(_socket(args), "usage-reset", **({"link": args.link} if args.link else {}))
    if not answer.get("ok"):
        print(f"error: {answer.get('error')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer["reset_mb"], indent=2))
    else:
        for name, mb in answer["reset_mb"].items():
            print(f"{name}: {mb} MB -> 0")
    return 0


def cmd_pop(args) -> int:
    from appliance.supervisor.control import request

    answer = request(_socket(args), "pop", name=args.name)
    if not answer.get("ok"):
        print(f"error: {answer.get('error')}", file=sys.stderr)
        return 1
    print(f"moving the stream to PoP {args.name}")
    return 0


def cmd_live_stop(args) -> int:
    from appliance.supervisor.control import request

    answer = request(_socket(args), args.command, source="cli")
    if args.json:
        print(json.dumps(answer, indent=2))
    elif answer.get("ok"):
        print(answer["state"])
    else:
        print(f"error: {answer.get('error')}", file=sys.stderr)
    return 0 if answer.get("ok") else 1


def cmd_probe(args) -> int:
    from appliance import probe

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config, profile = load_config(args)
    findings = probe.run(config)
    if args.json:
        print(json.dumps({"profile": profile.name, "parts": [f.as_dict() for f in findings]}, indent=2))
    else:
        print(f"profile {profile.name}: {profile.data.get('board', {}).get('description', '')}")
        print(probe.table(findings))
        missing = [f for f in findings if f.result == probe.MISSING]
        print(f"\n{len(findings) - len(missing)} of {len(findings)} parts usable; "
              + (f"{len(missing)} missing (see DETAIL)" if missing else "nothing missing"))
    return 0


def cmd_config(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.action == "check":
        profile = profiles.resolve(args.profile)
        try:
            cfgmod.load(Path(args.file), profile.data, str(profile.path))
        except ConfigError as e:
            print(f"{args.file}: {len(e.problems)} problem(s):", file=sys.stderr)
            for p in e.problems:
                print(f"  {p}", file=sys.stderr)
            return 1
        print(f"{args.file}: OK (over profile {profile.name})")
        return 0
    config, profile = load_config(args)
    from appliance.configshow import masked, to_toml

    data = masked(config)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"# profile {profile.name} ({profile.path}); config {_config_path(args.config) or 'defaults only'}")
        print("# secrets are masked")
        print(to_toml(data), end="")
    return 0


def cmd_api_token(args) -> int:
    """The token the page's login and the API's POSTs need (api.token, or the one the daemon made)."""
    from appliance.api.http import TOKEN_FILE

    config, _ = load_config(args)
    if config.api.token.get_secret_value():
        print(config.api.token.get_secret_value())
        return 0
    path = state_dir(config) / TOKEN_FILE
    try:
        print(path.read_text().strip())
    except FileNotFoundError:
        print(f"error: {path} does not exist yet: the daemon makes it when it first starts", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"error: {path}: permission denied (members of the appliance group may read it)", file=sys.stderr)
        return 1
    return 0


def cmd_relay(args) -> int:
    """Exit 78 (EX_CONFIG) only for what a restart cannot mend: systemd's unit does not
    restart on it. Anything else (a port still held, an address not up yet) exits 1."""
    import os

    from appliance.supervisor.systemd import setup_logging
    from appliance.hostnames import parse_srt_url
    from appliance.transport.relay_workers import run, workers_for

    setup_logging("info")
    secret = None
    secret_file = args.secret_file
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not secret_file and credentials and (Path(credentials) / "relay.secret").exists():
        secret_file = str(Path(credentials) / "relay.secret")  # systemd's LoadCredential=relay.secret:...
    if secret_file:
        try:
            secret = Path(secret_file).read_bytes().strip()
        except OSError as e:
            print(f"error: --secret-file {secret_file}: {e.strerror}", file=sys.stderr)
            return 78
    elif os.environ.get("APPLIANCE_RELAY_SECRET"):
        secret = os.environ["APPLIANCE_RELAY_SECRET"].encode()
    if secret is not None and len(secret) < 16:
        print("error: the relay secret must be at least 16 bytes", file=sys.stderr)
        return 78
    try:
        ingest = parse_srt_url(args.to, "--to")[:2]
        workers = workers_for(args.workers)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 78
    except ValueError:
        print(f"error: --workers {args.workers}: not a number from 1 to 64, nor auto", file=sys.stderr)
        return 78
    stats = None
    if args.stats:
        host, _, port = args.stats.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            print(f"error: --stats {args.stats}: not ADDRESS:PORT (e.g. 127.0.0.1:8181)", file=sys.stderr)
            return 78
        stats = (host.strip("[]") or "0.0.0.0", int(port))
    try:
        return run(args.listen, ingest, secret, args.bind, args.max_groups, args.max_links, stats, workers,
                   fast=not args.no_fast_path)
    except OSError as e:
        print(f"error: relay: cannot listen on {args.bind or 'every address'} port {args.listen}: {e.strerror or e}",
              file=sys.stderr)
        return 1


def cmd_panel_card(args) -> int:
    from appliance.panel import patterns

    if args.readme:
        readme = Path(args.readme)
        readme.write_text(patterns.readme_with_card(readme.read_text(), args.svg_link))
        print(f"updated the front-panel card in {readme}")
    if args.svg:
        Path(args.svg).parent.mkdir(parents=True, exist_ok=True)
        Path(args.svg).write_text(patterns.card_svg())
        print(f"wrote {args.svg}")
    if not (args.readme or args.svg):
        print(patterns.card_markdown(), end="")
    return 0


# --- parser ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appliance", description="Venue capture appliance")
    p.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, socket=False):
        sp.add_argument("--config", help=f"site config file (default {cfgmod.DEFAULT_CONFIG} if present)")
        sp.add_argument("--profile", help="hardware profile (default: detect the board)")
        if socket:
            sp.add_argument("--socket", help="control socket path (default: from the config)")
            sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = sub.add_parser("run", help="run the daemon (systemd runs this)")
    common(sp)
    sp.add_argument("--sim-go-after", type=float, metavar="SECONDS",
                    help="sim profile: press the simulated GO button this long after READY")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("status", help="show the daemon's state")
    common(sp, socket=True)
    sp.add_argument("--watch", nargs="?", type=float, const=1.0, default=0.0, metavar="SECONDS",
                    help="redraw it in place every SECONDS (default 1) until Ctrl-C")
    sp.set_defaults(func=cmd_status)
    for name, text in (("live", "go live (as the GO button)"), ("stop", "stop the show")):
        sp = sub.add_parser(name, help=text)
        common(sp, socket=True)
        sp.set_defaults(func=cmd_live_stop)

    sp = sub.add_parser("preflight", help="before the show: test each uplink against the relay/ingest, go or no-go")
    common(sp, socket=True)
    sp.add_argument("--seconds", type=float, default=12, help="length of the dry stream, all links together (4-60)")
    sp.set_defaults(func=cmd_preflight)

    sp = sub.add_parser("usage-reset", help="a new billing period: zero an uplink's data count (all without LINK)")
    common(sp, socket=True)
    sp.add_argument("link", nargs="?", help="the uplink's name, as in status")
    sp.set_defaults(func=cmd_usage_reset)

    sp = sub.add_parser("pop", help="mid-show: stream through this PoP (stream.relays) from now on")
    common(sp, socket=True)
    sp.add_argument("name", help="the PoP's name, as in status")
    sp.set_defaults(func=cmd_pop)

    sp = sub.add_parser("probe", help="check each hardware part of the profile, starting nothing")
    common(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_probe)

    sp = sub.add_parser("relay", help="run an SRTLA receiver: merge a sender's uplinks into one SRT stream")
    sp.add_argument("--listen", type=int, required=True, metavar="PORT", help="UDP port the senders register on")
    sp.add_argument("--to", required=True, metavar="srt://HOST:PORT", help="the SRT listener (ingest)")
    sp.add_argument("--bind", default="", metavar="ADDRESS",
                    help="listen on this address only (default: every IPv4 and IPv6 address)")
    sp.add_argument("--secret-file", help="only senders holding this shared secret may register "
                    "(default: the systemd credential relay.secret, if the unit loads one)")
    sp.add_argument("--max-groups", type=int, default=200, help="at most this many groups (senders), "
                    "shared among the workers")
    sp.add_argument("--workers", default="1", metavar="N", help="processes sharing the port, a group's "
                    "links all on one; auto: one for each core, at most 4 (default 1; the journal says when one "
                    "core is not enough)")
    sp.add_argument("--max-links", type=int, default=8)
    sp.add_argument("--no-fast-path", action="store_true", help="forward in Python even where the C hot path "
                    "is built (to compare; about twice the CPU)")
    sp.add_argument("--stats", metavar="ADDRESS:PORT", help="serve per-link stats here: /stats (JSON), /metrics "
                    "(Prometheus), /noalbs/openirl/STREAMID and /noalbs/belabox (NOALBS); e.g. 127.0.0.1:8181")
    sp.set_defaults(func=cmd_relay)

    from appliance.fleet.cli import add_parser as add_fleet

    add_fleet(sub)

    sp = sub.add_parser("panel-card", help="the front-panel card: every LED pattern and what to do")
    sp.add_argument("--readme", help="rewrite the card section of this README")
    sp.add_argument("--svg", help="write the panel picture (SVG) here")
    sp.add_argument("--svg-link", default="docs/panel.svg", help="how the README links the picture")
    sp.set_defaults(func=cmd_panel_card)

    sp = sub.add_parser("api-token", help="print the token the status page's login and the API's POSTs need")
    common(sp)
    sp.set_defaults(func=cmd_api_token)

    sp = sub.add_parser("config", help="show the merged config (secrets masked) or check a file")
    csub = sp.add_subparsers(dest="action", required=True)
    show = csub.add_parser("show", help="print the merged configuration, secrets masked")
    common(show)
    show.add_argument("--json", action="store_true")
    check = csub.add_parser("check", help="validate FILE over the profile; list every problem")
    check.add_argument("file")
    check.add_argument("--profile", help="hardware profile (default: detect the board)")
    sp.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"configuration error ({len(e.problems)}):", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 78
    except (ControlError, ApplianceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
