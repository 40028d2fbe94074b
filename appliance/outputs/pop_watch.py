"""Which PoP carries the stream, and when to leave it: when the bond has had no
uplink up to it for POP_SILENT after it answered (each link already silent for its
dead time, 150 to 300 ms), or POP_UNANSWERED when it never answered, or when the
operator asks. Never back by itself: the next GO, or the operator, chooses again.
No uplink with an address, or a relay name that does not resolve, is no fault of
the PoP's: it is kept."""

from __future__ import annotations

POP_SILENT, POP_UNANSWERED = 1.0, 5.0


class PopWatch:
    def __init__(self, labels: list[str]):
        self.labels = labels
        self.index = 0
        self.moves = 0  # this process
        self._asked: str | None = None  # (any thread -> the sender's)
        self._silent_since, self._proven = 0.0, False

    def aimed(self, index: int, now: float) -> None:
        self.index, self._silent_since, self._proven = index, now, False

    def ask(self, name: str) -> None:
        if name not in self.labels:
            raise ValueError(f"no PoP {name!r} (known: {', '.join(self.labels)})")
        self._asked = name

    def verdict(self, now: float, bonder) -> tuple[str, int]:
        """(why to leave, for which PoP's index), or ("", -1) to stay."""
        asked, self._asked = self._asked, None
        if asked is not None and asked != self.labels[self.index]:
            return f"the operator asked for {asked}", self.labels.index(asked)
        b = bonder
        if b is None or len(self.labels) < 2 or not b.links or b.name_error is not None:
            return "", -1
        # (A link kept up only because it is the last one is as silent as a dead one.)
        if any(link.state == "up" and not link.kept for link in list(b.links.values())):
            self._silent_since, self._proven = now, True
            return "", -1
        silent = now - self._silent_since
        if silent < (POP_SILENT if self._proven else POP_UNANSWERED):
            return "", -1
        why = (f"no answer on any uplink for {silent:.1f} s" if self._proven
               else f"it never answered on any uplink in {silent:.0f} s")
        return why, (self.index + 1) % len(self.labels)
