"""The libsrt binding against the installed library and header, and a real SRT peer."""

from __future__ import annotations

import ctypes
import subprocess
import time

import pytest

from appliance.transport import libsrt
from conftest import free_port, wait_until

HEADER = "/usr/include/srt/srt.h"
CONSTANTS = ["SRTO_SNDSYN", "SRTO_RCVSYN", "SRTO_SNDTIMEO", "SRTO_STATE", "SRTO_LATENCY", "SRTO_OHEADBW",
             "SRTO_PASSPHRASE", "SRTO_PBKEYLEN", "SRTO_CONNTIMEO", "SRTO_STREAMID", "SRTO_PAYLOADSIZE",
             "SRTO_TRANSTYPE", "SRTT_LIVE"]


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    """offsetof() every field and the option numbers, as the C compiler sees srt.h."""
    import os

    assert os.path.exists(HEADER), "scripts/test installs libsrt-openssl-dev (the header)"
    d = tmp_path_factory.mktemp("srtprobe")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <srt/srt.h>', "int main(void) {",
             'printf("sizeof %zu\\n", sizeof(SRT_TRACEBSTATS));']
    for name, _ in libsrt.TraceBStats._fields_:
        lines.append(f'printf("field {name} %zu\\n", offsetof(SRT_TRACEBSTATS, {name}));')
    for name in CONSTANTS:
        lines.append(f'printf("const {name} %d\\n", (int){name});')
    lines += ["return 0; }"]
    (d / "probe.c").write_text("\n".join(lines))
    subprocess.run(["gcc", "-o", str(d / "probe"), str(d / "probe.c")], check=True, capture_output=True)
    out = subprocess.run([str(d / "probe")], check=True, capture_output=True, text=True).stdout
    return {tuple(line.split()[:-1]) if line.split()[0] != "sizeof" else ("sizeof",): int(line.split()[-1])
            for line in out.splitlines()}


def test_stats_struct_matches_the_installed_header(c_layout):
    assert ctypes.sizeof(libsrt.TraceBStats) == c_layout[("sizeof",)]
    for name, _ in libsrt.TraceBStats._fields_:
        assert getattr(libsrt.TraceBStats, name).offset == c_layout[("field", name)], name


def test_option_numbers_match_the_installed_header(c_layout):
    for name in CONSTANTS:
        assert getattr(libsrt, name) == c_layout[("const", name)], name


def test_caller_delivers_byte_identical_and_reports_statistics(ingest):
    out = ingest.start()
    c = libsrt.SrtCaller("127.0.0.1", ingest.port, latency_ms=120)
    c.connect()
    assert c.state() == "connected"
    payload = [bytes([0x47, i % 256]) + bytes([i % 251]) * 1314 for i in range(300)]
    for chunk in payload:
        assert c.send(chunk) == 1316
    wait_until(lambda: c.stats()["packets_sent"] >= 300 and c.stats()["send_buffer_packets"] == 0, 5,
               what="everything sent and acknowledged")
    stats = c.stats()
    assert stats["packets_sent"] >= 300 and stats["bytes_sent"] >= 300 * 1316
    assert stats["rtt_ms"] >= 0 and stats["packets_dropped"] == 0
    time.sleep(0.5)  # the receiver delivers after its latency
    c.close()
    ingest.stop()
    assert out.read_bytes() == b"".join(payload)
    assert c.state() == "closed"


def test_errors_carry_libsrt_messages():
    port = free_port()  # nothing listening on it
    c = libsrt.SrtCaller("127.0.0.1", port, connect_timeout_ms=300)
    with pytest.raises(libsrt.SrtError) as e:
        c.connect()
    assert f"127.0.0.1:{port}" in str(e.value) and len(str(e.value)) > 25
    with pytest.raises(libsrt.SrtError, match="passphrase"):
        libsrt.SrtCaller("127.0.0.1", port, passphrase="short")


def test_passphrase_and_stream_id_reach_the_listener(ingest):
    out = ingest.start("&passphrase=correct-horse-battery&pbkeylen=32")
    port = ingest.port
    c = libsrt.SrtCaller("127.0.0.1", port, passphrase="correct-horse-battery", pbkeylen=32, stream_id="publish:box1")
    c.connect()
    c.send(bytes([0x47]) * 1316)
    wait_until(lambda: c.stats()["packets_sent"] >= 1 and c.stats()["send_buffer_packets"] == 0, 5,
               what="sent and acknowledged")
    time.sleep(0.5)  # the receiver delivers after its latency
    c.close()
    wrong = libsrt.SrtCaller("127.0.0.1", port, passphrase="wrong-horse-battery", connect_timeout_ms=1000)
    with pytest.raises(libsrt.SrtError):
        wrong.connect()
        for _ in range(50):  # some libsrt versions only notice at the first packets
            wrong.send(bytes([0x47]) * 1316)
            time.sleep(0.02)
    wrong.close()
    ingest.stop()
    assert out.read_bytes() == bytes([0x47]) * 1316, "the right key got through, decrypted"


def test_send_buffer_bytes_and_span_while_the_path_holds_everything(ingest):
    from netsim import Impairer

    ingest.start()
    path = Impairer(("127.0.0.1", ingest.port))
    c = libsrt.SrtCaller("127.0.0.1", path.addr[1], latency_ms=120)
    try:
        c.connect()
        assert c.buffered() == (0, 0)
        path.held.add("127.0.0.1")  # nothing is acknowledged
        c.send(b"\x47" * 1316)
        time.sleep(0.3)
        c.send(b"\x47" * 1316)
        held, span = c.buffered()
        assert held == 2 * 1316 and 280 <= span <= 400, (held, span)
        path.held.clear()
        wait_until(lambda: c.buffered() == (0, 0), 5, what="acknowledged and emptied")
    finally:
        c.close()
        path.close()
