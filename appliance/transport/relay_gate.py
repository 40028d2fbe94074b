"""Who may register with the relay: the shared secret's challenges and proofs
(docs/relay-auth.md), and the rate of registrations per source. A mixin of
Relay's: it holds no socket, only what the answers need to remember, bounded."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct

from appliance.transport import srtla

CHALLENGE_TTL = 10  # s a challenge is good for (once)
USED_MAX = 200_000  # challenges remembered: beyond that, proofs are refused until some expire
REG_RATE, REG_BURST = 20.0, 40.0  # REG1/REG2 a second from one source (a sender needs a few)
SOURCES_MAX = 100_000

def source_of(addr) -> str:
    """Who a limit counts against: the IPv4 address, or the IPv6 /64 (one subscriber's)."""
    ip = ipaddress.ip_address(addr[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


class RelayGate:
    secret: bytes | None

    def _init_gate(self, key: bytes | None = None, workers: int = 1) -> None:
        """key: the challenges' own, never sent: drawn here, or shared by the relay's workers
        (a challenge one gave, another may check); each worker keeps its share of the tables."""
        self._key_secret = key or os.urandom(32)
        self._used_max, self._sources_max = USED_MAX // workers, SOURCES_MAX // workers
        # (REG1 or REG2, challenge) answered -> (until when it would be stale anyway, by whom)
        self._used: dict[tuple[int, bytes], tuple[float, tuple]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, when)
        self._buckets_pruned = 0.0

    def _challenge(self, addr, at: int, nonce: bytes | None = None) -> bytes:
        """[when (s) | nonce | MAC of both and the address]: the relay keeps no state
        for a challenge it hands out, only for the ones answered."""
        head = struct.pack(">I", at & 0xFFFFFFFF) + (nonce or os.urandom(4))
        return head + hmac.new(self._key_secret, head + f"{addr[0]}|{addr[1]}".encode(), hashlib.sha256).digest()[:8]

    def _refused(self, code: int, ident: bytes, addr, now: float, member: bool = False) -> str | None:
        """Why the proof in this REG1/REG2 is refused, or None (and the challenge is spent).
        member: the address is in the group already; its own REG2 sent again (its REG3 was
        lost) is no replay."""
        challenge = srtla.proof_challenge(code, ident, self.secret)
        if challenge is None:
            return "without a valid proof"
        at = struct.unpack(">I", challenge[:4])[0]
        if not hmac.compare_digest(challenge, self._challenge(addr, at, challenge[4:8])):
            return "with a proof for another address"
        if (int(now) - at) & 0xFFFFFFFF > CHALLENGE_TTL:
            return "with a stale proof"
        used = self._used.get((code, challenge))
        if used is not None:
            return None if member and used[1] == addr else "with a replayed proof"
        if len(self._used) >= self._used_max:
            return "while too many proofs are remembered"
        self._used[(code, challenge)] = (now + CHALLENGE_TTL + 1, addr)
        return None

    def _allowed(self, addr, now: float) -> bool:
        """A token bucket per source: registrations a second."""
        src = source_of(addr)
        tokens, then = self._buckets.get(src, (REG_BURST, now))
        tokens = min(REG_BURST, tokens + (now - then) * REG_RATE)
        if tokens < 1:
            self._buckets[src] = (tokens, now)
            return False
        if src not in self._buckets and len(self._buckets) >= self._sources_max:
            return False
        self._buckets[src] = (tokens - 1, now)
        return True

    def _prune_gate(self, now: float) -> None:
        while self._used:  # in the order they were answered, so in the order they expire
            first = next(iter(self._used))
            if self._used[first][0] >= now:
                break
            del self._used[first]
        if now - self._buckets_pruned >= 10.0:
            self._buckets_pruned = now
            for src, (tokens, then) in list(self._buckets.items()):
                if tokens + (now - then) * REG_RATE >= REG_BURST:
                    del self._buckets[src]  # full again: as if never seen
