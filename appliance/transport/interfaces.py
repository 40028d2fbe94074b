"""Where each uplink sends from: interface names (or pinned addresses) -> source addresses."""

from __future__ import annotations

import socket


def resolve_uplinks(spec: list[str]) -> dict[str, str]:
    """{"eth0": "192.0.2.10", ...} for the interfaces that are up with an IPv4 address.

    Entries: "auto" (every such interface but loopback), an interface name, or
    "NAME@ADDRESS" to use a fixed source address under that name.
    """
    import psutil

    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    out: dict[str, str] = {}

    def ipv4(name: str) -> str | None:
        if name not in addrs or not (stats.get(name) and stats[name].isup):
            return None
        return next((a.address for a in addrs[name] if a.family == socket.AF_INET), None)

    for entry in spec:
        if "@" in entry:
            name, _, address = entry.partition("@")
            out[name] = address
        elif entry == "auto":
            for name in sorted(addrs):
                ip = ipv4(name)
                if ip and not ip.startswith("127."):
                    out.setdefault(name, ip)
        else:
            ip = ipv4(entry)
            if ip:
                out[entry] = ip
    return out
