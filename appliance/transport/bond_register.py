"""The bond's registration with the relay (specs/srtla.md): the id we make, the
group the relay makes of it, and, with a secret, the proof each address gives
(HMAC over the relay's latest challenge for that address: good once, there only).

Pure: it decides what to send and keeps the ids; the bond does the sending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from appliance.transport import srtla
from appliance.transport.bond_link import Link

log = logging.getLogger("appliance.transport.bond")  # (its lines read as the bond's)

REG1_EVERY = 4.0  # s: REG1 on one link only, then wait this long for the REG2


class Registration:
    def __init__(self, secret: bytes | None, relay_where):
        self.secret = secret or None
        self.ident = srtla.sender_id()
        self.group: bytes | None = None
        self._reg1_at = -1e9
        self._open_relay = False  # we hold a secret, and the relay asked for no proof
        self._where = relay_where  # () -> the relay, for the log

    def stale(self, link: Link, now: float, links: Iterable[Link]) -> bool:
        """A REG_NGP ("no such group") on a link that must not make us start over: it
        answers an older REG2 (sent with our id while the group was being made: links
        race at start), or another link is carrying the group right now. Starting over
        would throw away a working group, and the relay refuses REG1 from addresses it
        still holds in it: the links could never return."""
        if self.group is None:
            return False
        return link.reg_sent != self.group or now - link.reg_group_since < 1.0 or any(
            o is not link and o.state == "up" and now - o.last_rx <= o.dead_after() for o in links)

    def reg1(self, link: Link, now: float) -> bytes | None:
        """The relay does not know our group (restarted, or we were silent too long):
        start over. The REG1 to send on this link, or None while one is pending."""
        self.group = None
        if now - self._reg1_at <= REG1_EVERY:
            return None
        self._reg1_at = now
        if self.secret and link.challenge is not None:
            self.ident = srtla.prove(srtla.REG1, self.ident, link.challenge, self.secret)
        elif self.secret and not self._open_relay:
            # srtla_rec, or our relay run without one: the secret protects the relay, and
            # this one asks for nothing.
            self._open_relay = True
            log.warning("bond: the relay %s asks for no proof: registering without the secret", self._where())
        return srtla.reg(srtla.REG1, self.ident)

    def grouped(self, d: bytes) -> str | None:
        """A REG2: the relay made our group. None when it is ours, else why it is dropped."""
        gid = srtla.reg_id(d, srtla.REG2)
        if gid is None:
            return "bad REG2 length"
        if gid[:128] != self.ident[:128]:
            return "REG2 for another sender"
        self.group = gid
        return None

    def asks_proof(self, d: bytes) -> bool:
        """A REG_NAK carrying a challenge for a group we have: the address must prove itself
        again (its last proof was spent or stale), not start over."""
        return bool(self.secret and self.group is not None and srtla.challenge_of(d))

    def reg2(self, link: Link, now: float) -> bytes:
        """The REG2 that (re-)joins a link to the group, or asks for one while there is none."""
        what = self.group or self.ident
        if what != link.reg_sent:
            link.reg_sent, link.reg_group_since = what, now
        if self.secret and self.group is not None and link.challenge is not None:
            what = srtla.prove(srtla.REG2, what, link.challenge, self.secret)
        return srtla.reg(srtla.REG2, what)
