"""A thin ctypes binding over the system's libsrt (Debian: libsrt1.5-openssl).

PyPI has no maintained SRT binding, and FFmpeg in PyAV's wheels has no srt://,
so we call the C library directly: a caller socket with the options a live
MPEG-TS stream needs, send, statistics and close. The struct and the option
numbers below mirror srt.h of libsrt 1.5; tests/test_libsrt.py compiles a probe
against the installed header and checks every offset and constant.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import threading

from appliance import hostnames
from appliance.errors import ApplianceError

LIBRARIES = ("libsrt.so.1.5", "libsrt-openssl.so.1.5", "libsrt-gnutls.so.1.5")
INSTALL_HINT = "apt-get install libsrt1.5-openssl"

# SRT_SOCKOPT (srt.h, libsrt 1.5)
SRTO_SNDSYN = 1
SRTO_RCVSYN = 2
SRTO_SNDTIMEO = 13
SRTO_STATE = 17
SRTO_LATENCY = 23
SRTO_OHEADBW = 25
SRTO_PASSPHRASE = 26
SRTO_PBKEYLEN = 27
SRTO_CONNTIMEO = 36
SRTO_STREAMID = 46
SRTO_PAYLOADSIZE = 49
SRTO_TRANSTYPE = 50
SRTT_LIVE = 0
LIVE_PAYLOAD = 1316  # 7 MPEG-TS packets

SOCK_STATES = {1: "init", 2: "opened", 3: "listening", 4: "connecting", 5: "connected", 6: "broken",
               7: "closing", 8: "closed", 9: "nonexist"}


class SrtError(ApplianceError, ConnectionError):
    """libsrt refused: the message is libsrt's own."""


class SrtUnavailable(SrtError):
    """The system's libsrt is not installed."""


_I64, _U64, _I, _D = ctypes.c_int64, ctypes.c_uint64, ctypes.c_int, ctypes.c_double


class TraceBStats(ctypes.Structure):
    """struct CBytePerfMon (SRT_TRACEBSTATS), field for field."""

    _fields_ = [
        ("msTimeStamp", _I64), ("pktSentTotal", _I64), ("pktRecvTotal", _I64),
        ("pktSndLossTotal", _I), ("pktRcvLossTotal", _I), ("pktRetransTotal", _I), ("pktSentACKTotal", _I),
        ("pktRecvACKTotal", _I), ("pktSentNAKTotal", _I), ("pktRecvNAKTotal", _I),
        ("usSndDurationTotal", _I64),
        ("pktSndDropTotal", _I), ("pktRcvDropTotal", _I), ("pktRcvUndecryptTotal", _I),
        ("byteSentTotal", _U64), ("byteRecvTotal", _U64), ("byteRcvLossTotal", _U64), ("byteRetransTotal", _U64),
        ("byteSndDropTotal", _U64), ("byteRcvDropTotal", _U64), ("byteRcvUndecryptTotal", _U64),
        ("pktSent", _I64), ("pktRecv", _I64),
        ("pktSndLoss", _I), ("pktRcvLoss", _I), ("pktRetrans", _I), ("pktRcvRetrans", _I), ("pktSentACK", _I),
        ("pktRecvACK", _I), ("pktSentNAK", _I), ("pktRecvNAK", _I),
        ("mbpsSendRate", _D), ("mbpsRecvRate", _D), ("usSndDuration", _I64), ("pktReorderDistance", _I),
        ("pktRcvAvgBelatedTime", _D), ("pktRcvBelated", _I64),
        ("pktSndDrop", _I), ("pktRcvDrop", _I), ("pktRcvUndecrypt", _I),
        ("byteSent", _U64), ("byteRecv", _U64), ("byteRcvLoss", _U64), ("byteRetrans", _U64),
        ("byteSndDrop", _U64), ("byteRcvDrop", _U64), ("byteRcvUndecrypt", _U64),
        ("usPktSndPeriod", _D), ("pktFlowWindow", _I), ("pktCongestionWindow", _I), ("pktFlightSize", _I),
        ("msRTT", _D), ("mbpsBandwidth", _D), ("byteAvailSndBuf", _I), ("byteAvailRcvBuf", _I),
        ("mbpsMaxBW", _D), ("byteMSS", _I), ("pktSndBuf", _I), ("byteSndBuf", _I), ("msSndBuf", _I),
        ("msSndTsbPdDelay", _I), ("pktRcvBuf", _I), ("byteRcvBuf", _I), ("msRcvBuf", _I), ("msRcvTsbPdDelay", _I),
        ("pktSndFilterExtraTotal", _I), ("pktRcvFilterExtraTotal", _I), ("pktRcvFilterSupplyTotal", _I),
        ("pktRcvFilterLossTotal", _I), ("pktSndFilterExtra", _I), ("pktRcvFilterExtra", _I),
        ("pktRcvFilterSupply", _I), ("pktRcvFilterLoss", _I), ("pktReorderTolerance", _I),
        ("pktSentUniqueTotal", _I64), ("pktRecvUniqueTotal", _I64), ("byteSentUniqueTotal", _U64),
        ("byteRecvUniqueTotal", _U64), ("pktSentUnique", _I64), ("pktRecvUnique", _I64),
        ("byteSentUnique", _U64), ("byteRecvUnique", _U64),
    ]


_lib = None
_lib_lock = threading.Lock()


def library():
    """Load libsrt once and call srt_startup(); SrtUnavailable names the package."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        names = list(LIBRARIES)
        found = ctypes.util.find_library("srt")
        if found:
            names.append(found)
        errors = []
        for name in names:
            try:
                lib = ctypes.CDLL(name, use_errno=True)
                break
            except OSError as e:
                errors.append(str(e))
        else:
            raise SrtUnavailable(f"libsrt is not installed ({INSTALL_HINT})")
        lib.srt_startup.restype = _I
        lib.srt_create_socket.restype = ctypes.c_int32
        lib.srt_setsockflag.argtypes = [ctypes.c_int32, _I, ctypes.c_void_p, _I]
        lib.srt_getsockflag.argtypes = [ctypes.c_int32, _I, ctypes.c_void_p, ctypes.POINTER(_I)]
        lib.srt_connect.argtypes = [ctypes.c_int32, ctypes.c_char_p, _I]
        lib.srt_sendmsg2.argtypes = [ctypes.c_int32, ctypes.c_char_p, _I, ctypes.c_void_p]
        lib.srt_bstats.argtypes = [ctypes.c_int32, ctypes.POINTER(TraceBStats), _I]
        lib.srt_close.argtypes = [ctypes.c_int32]
        lib.srt_getsndbuffer.argtypes = [ctypes.c_int32, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
        lib.srt_getlasterror_str.restype = ctypes.c_char_p
        lib.srt_getlasterror.argtypes = [ctypes.POINTER(_I)]
        lib.srt_getsockstate.argtypes = [ctypes.c_int32]
        lib.srt_getsockstate.restype = _I
        lib.srt_setloglevel.argtypes = [_I]
        if lib.srt_startup() < 0:
            raise SrtError(f"srt_startup failed: {_last_error(lib)}")
        lib.srt_setloglevel(3)  # LOG_ERR: libsrt's own chatter stays off stderr
        _lib = lib
        return lib


def _last_error(lib) -> str:
    msg = lib.srt_getlasterror_str()
    return msg.decode(errors="replace") if msg else "unknown libsrt error"


def _sockaddr(addr: tuple) -> bytes:
    """struct sockaddr_in / sockaddr_in6 for srt_connect, from a resolved address."""
    port = addr[1]
    if len(addr) == 2:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(addr[0]) + bytes(8)
    flow, scope = addr[2], addr[3]
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, flow)
            + socket.inet_pton(socket.AF_INET6, addr[0]) + struct.pack("=I", scope))


class SrtCaller:
    """An SRT caller socket for a live stream of 1316-byte TS messages."""

    def __init__(self, host: str, port: int, *, latency_ms: int = 1000, stream_id: str = "", passphrase: str = "",
                 pbkeylen: int = 16, payload_size: int = LIVE_PAYLOAD, overhead_percent: int = 25,
                 connect_timeout_ms: int = 3000, send_timeout_ms: int = 1000, role: str = "ingest"):
        """host: a name (looked up at every connect), an IPv4 or an IPv6 literal; role
        names it in errors ("ingest name does not resolve: ...")."""
        if passphrase and not 10 <= len(passphrase) <= 79:
            raise SrtError("the SRT passphrase must be 10 to 79 characters")
        if pbkeylen not in (16, 24, 32):
            raise SrtError("the SRT key length must be 16, 24 or 32 bytes")
        self.lib = library()
        self.host, self.port, self.role = host, port, role
        self.address: tuple | None = None  # where the last connect went
        self.options = [
            (SRTO_TRANSTYPE, SRTT_LIVE), (SRTO_LATENCY, latency_ms), (SRTO_PAYLOADSIZE, payload_size),
            (SRTO_OHEADBW, overhead_percent), (SRTO_CONNTIMEO, connect_timeout_ms),
            (SRTO_SNDTIMEO, send_timeout_ms), (SRTO_SNDSYN, 1), (SRTO_RCVSYN, 1),
        ]
        self.stream_id, self.passphrase, self.pbkeylen = stream_id, passphrase, pbkeylen
        self.sock: int | None = None

    def _check(self, rc: int, what: str) -> int:
        if rc < 0:
            raise SrtError(f"{what}: {_last_error(self.lib)}")
        return rc

    def _set_int(self, opt: int, value: int) -> None:
        v = _I(value)
        self._check(self.lib.srt_setsockflag(self.sock, opt, ctypes.byref(v), ctypes.sizeof(v)), f"option {opt}")

    def _set_str(self, opt: int, value: str, what: str) -> None:
        raw = value.encode()
        self._check(self.lib.srt_setsockflag(self.sock, opt, ctypes.c_char_p(raw), len(raw)), what)

    def connect(self) -> None:
        """Blocking (the sender's thread): the name is looked up again, and each of its
        addresses tried in turn. NameNotResolved or SrtError, both ConnectionErrors."""
        self.close()
        failures = []
        for addr in hostnames.resolve(self.host, self.port, role=self.role):
            try:
                self._connect(addr)
                self.address = addr
                return
            except SrtError as e:
                failures.append((hostnames.display(addr), str(e)))
        named = hostnames.display((self.host, self.port))
        if len(failures) == 1 and failures[0][0] == named:
            raise SrtError(f"connect to {named}: {failures[0][1]}")
        raise SrtError(f"connect to {named}: " + "; ".join(f"at {a}: {why}" for a, why in failures))

    def _connect(self, addr: tuple) -> None:
        sock = self.lib.srt_create_socket()
        if sock < 0:
            raise SrtError(f"srt_create_socket: {_last_error(self.lib)}")
        self.sock = sock
        try:
            for opt, value in self.options:
                self._set_int(opt, value)
            if self.stream_id:
                self._set_str(SRTO_STREAMID, self.stream_id, "stream id")
            if self.passphrase:
                self._set_int(SRTO_PBKEYLEN, self.pbkeylen)
                self._set_str(SRTO_PASSPHRASE, self.passphrase, "passphrase")  # never echoed in errors
            raw = _sockaddr(addr)
            if self.lib.srt_connect(sock, raw, len(raw)) < 0:
                raise SrtError(_last_error(self.lib))
        except BaseException:
            self.close()
            raise

    def send(self, data: bytes) -> int:
        if self.sock is None:
            raise SrtError("not connected")
        return self._check(self.lib.srt_sendmsg2(self.sock, data, len(data), None), "send")

    def state(self) -> str:
        if self.sock is None:
            return "closed"
        return SOCK_STATES.get(self.lib.srt_getsockstate(self.sock), "unknown")

    def stats(self, clear: bool = False) -> dict:
        if self.sock is None:
            raise SrtError("not connected")
        s = TraceBStats()
        self._check(self.lib.srt_bstats(self.sock, ctypes.byref(s), int(clear)), "statistics")
        return {
            "rtt_ms": s.msRTT, "send_buffer_ms": s.msSndBuf, "send_buffer_bytes": s.byteSndBuf,
            "send_buffer_packets": s.pktSndBuf, "send_rate_mbps": s.mbpsSendRate, "bandwidth_mbps": s.mbpsBandwidth,
            "packets_sent": s.pktSentTotal, "packets_lost": s.pktSndLossTotal,
            "packets_retransmitted": s.pktRetransTotal, "packets_dropped": s.pktSndDropTotal,
            "bytes_sent": s.byteSentTotal, "flight_size": s.pktFlightSize, "acks_received": s.pktRecvACKTotal,
        }

    def buffered(self) -> tuple[int, int]:
        """The send buffer (sent and not yet acknowledged, or not yet sent): its bytes,
        and its span in ms (from its oldest packet to its newest, 1 ms if it holds one,
        0 if empty). Cheaper than stats(), for asking before every frame."""
        if self.sock is None:
            raise SrtError("not connected")
        blocks, nbytes = ctypes.c_size_t(), ctypes.c_size_t()
        span = self._check(self.lib.srt_getsndbuffer(self.sock, ctypes.byref(blocks), ctypes.byref(nbytes)),
                           "send buffer")
        return nbytes.value, span

    def close(self) -> None:
        if self.sock is not None:
            sock, self.sock = self.sock, None
            self.lib.srt_close(sock)
