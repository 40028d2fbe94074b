"""The bonding sender's flight table: every SRT data packet sent and not yet
acknowledged, which uplink carries it, when it left, and whether its loss was
counted.

The bond asks it three things: is a retransmission's original still on its way
(then it is held, not sent again), which link lost a packet the receiver NAKs
(that link gets a smaller window, its loss counted once), and what a dead link
had in flight (re-sent at once on the others). Each link's set of sequence
numbers lives here too, so a packet moving to another link, acknowledged or
aged out leaves both in step; the link reads the size of its set for its score.

Plain tuples on the packet path: this runs for every packet of the stream.
"""

from __future__ import annotations

from collections import OrderedDict

IN_FLIGHT_KEEP = 8192  # packets remembered: seconds of a stream at any bitrate a bond carries


class FlightTable:
    def __init__(self, keep: int = IN_FLIGHT_KEEP):
        self.keep = keep
        # seq -> (link, packet, sent at, its loss already counted), oldest first. SRT asks
        # again for a packet still missing an RTT later (its periodic NAK): one loss, not two.
        self._packets: OrderedDict[int, tuple[str, bytes, float, bool]] = OrderedDict()
        self._carried: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._packets)

    # --- links ---------------------------------------------------------------------------------------

    def carried_by(self, link: str) -> set[int]:
        """The sequence numbers in flight on a link: its own set, kept by this table."""
        return self._carried.setdefault(link, set())

    def drop_link(self, link: str) -> None:
        """A link that left: its packets stay (a NAK may still name them), unattributed."""
        self._carried.pop(link, None)

    def take(self, link: str) -> list[bytes]:
        """What a dead link had in flight, oldest first, no longer its own."""
        seqs = sorted(self._carried.get(link, ()))
        self._carried.get(link, set()).clear()
        return [self._packets[s][1] for s in seqs if s in self._packets]

    # --- packets ---------------------------------------------------------------------------------------

    def sent(self, seq: int, link: str, packet: bytes, at: float) -> None:
        """A transmission on a link; a retransmission moves the packet to the link now carrying it."""
        earlier = self._packets.get(seq)
        if earlier is not None and earlier[0] != link:
            self._discard(earlier[0], seq)
        self.carried_by(link).add(seq)
        self._packets[seq] = (link, packet, at, False)  # a new transmission: its loss a new one
        self._packets.move_to_end(seq)
        while len(self._packets) > self.keep:
            old, (lname, *_) = self._packets.popitem(last=False)
            self._discard(lname, old)

    def sent_on(self, seq: int) -> tuple[str, float] | None:
        """The link carrying a packet and when it left it, if it is in flight."""
        entry = self._packets.get(seq)
        return None if entry is None else (entry[0], entry[2])

    def arrived(self, link: str, seq: int) -> bool:
        """The relay received it on that link (an SRTLA ACK): True when it was flying there."""
        carried = self._carried.get(link)
        if carried is None or seq not in carried:
            return False
        carried.discard(seq)
        return True

    def lost(self, seq: int) -> tuple[str, bool] | None:
        """The receiver NAKed it: the link that carried it, and whether this is the first
        NAK of that transmission (its loss counted now)."""
        entry = self._packets.get(seq)
        if entry is None:
            return None
        if entry[3]:
            return entry[0], False
        self._packets[seq] = entry[:3] + (True,)  # (keeps its place in the order)
        return entry[0], True

    def acked_below(self, ack: int) -> None:
        """The receiver has everything before ack (an SRT ACK)."""
        packets = self._packets
        while packets:
            seq = next(iter(packets))
            if not before(seq, ack):
                break
            self._discard(packets.popitem(last=False)[1][0], seq)

    def _discard(self, link: str, seq: int) -> None:
        carried = self._carried.get(link)
        if carried is not None:
            carried.discard(seq)


def before(a: int, b: int) -> bool:
    """SRT sequence a comes before b (31-bit numbers that wrap)."""
    return 0 < ((b - a) & 0x7FFFFFFF) < 0x40000000
