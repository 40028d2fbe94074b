"""A PoP's distance, inside a network namespace (the kernel has no netem): netsim's
Impairer listening on the PoP's address, delaying every datagram each way.

    ip netns exec NS python tests/delay_forwarder.py ADDR PORT UPSTREAM_PORT ONE_WAY_MS

forwards ADDR:PORT to 127.0.0.1:UPSTREAM_PORT in that namespace (one upstream
socket per sender address, so the relay behind sees one peer per uplink), and
prints "ready" once bound; SIGTERM stops it.
"""

from __future__ import annotations

import signal
import sys

from netsim import Impairer

if __name__ == "__main__":
    addr, port, upstream, one_way_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    forwarder = Impairer(("127.0.0.1", upstream), bind=(addr, port))
    forwarder.delay_all = one_way_ms / 1000
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    forwarder.close()
