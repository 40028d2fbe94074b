"""`appliance relay`'s processes: one, or several workers sharing its port.

One relay process is one Python thread on one core. With `--workers N` (or auto:
one for each core it may run on, at most MAX_AUTO) the relay binds N sockets to its
port with SO_REUSEPORT, before anything else, so a port in use fails at once, and
forks one worker for each. The kernel spreads the senders over them by address; a
group's links stay on the worker that made the group (relay_affinity.py says how).
Every worker holds its share of --max-groups and of the gate's tables.

The first process stays as the supervisor: it serves --stats, asking each worker
for its view over a Unix socket and merging them (each group says which worker holds
it), and it ends the relay when a worker ends, with exit 1, so that systemd starts
all of it again (the senders register again by themselves) rather than leave a
share of the port's senders with nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import socket
import time
from collections import Counter

from appliance.transport import relay_stats
from appliance.transport.relay import Relay, listening_socket
from appliance.transport.relay_stats import show_addr as _show

log = logging.getLogger("appliance.transport.relay")

MAX_AUTO = 4  # (each further process costs some 6 MiB of PSS: MemoryMax=256M)
ANSWER_WITHIN = 2.0  # s a worker has to give its view
STOP_WITHIN = 5.0  # s a worker has to stop before it is killed
VIEW_LIMIT = 1 << 24  # bytes of one worker's view (200 groups of 8 links are some 400 kB)


def workers_for(value: str) -> int:
    """--workers: a number, or "auto" (the cores this process may run on)."""
    if value == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except OSError:  # (a seccomp filter that refuses it)
            cores = os.cpu_count() or 1
        return max(1, min(MAX_AUTO, cores))
    n = int(value)
    if not 1 <= n <= 64:
        raise ValueError(f"--workers {value}: not between 1 and 64")
    return n


def run(listen_port: int, server: tuple[str, int], secret: bytes | None, bind: str = "", max_groups: int = 200,
        max_links: int = 8, stats: tuple[str, int] | None = None, workers: int = 1, fast: bool = True) -> int:
    """-> the exit status. fast: the C hot path, where it is built (relay_fastpath). A port that cannot be bound raises OSError before anything runs."""
    if workers == 1:
        relay = Relay((bind, listen_port), server, secret, max_groups, max_links,
                      sock=listening_socket(bind, listen_port), fast=fast)
        return asyncio.run(_serve(relay, stats))
    # First without SO_REUSEPORT: a port held by anything, another relay's workers among
    # them (which ours would silently join, sharing its senders), fails here as it would with one.
    with listening_socket(bind, listen_port) as probe:
        where = probe.getsockname()[:2]
    socks = [listening_socket(bind, where[1], reuseport=True) for _ in range(workers)]
    key = os.urandom(32)  # the challenges', shared: a REG1 may reach another worker than the REG2 before it
    inboxes = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)]
    controls = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(workers)]
    share = math.ceil(max_groups / workers)
    pids = []
    for i in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker: its own socket, inbox and control; the others' inboxes to hand over to
            code = 1
            try:
                keep = {socks[i], inboxes[i][0], controls[i][1], *(pair[1] for pair in inboxes)}
                for s in [*socks, *(s for pair in inboxes + controls for s in pair)]:
                    if s not in keep:
                        s.close()
                relay = Relay((bind, listen_port), server, secret, share, max_links, sock=socks[i],
                              worker=(i, workers), gate_key=key, hand_over=[pair[1] for pair in inboxes],
                              inbox=inboxes[i][0], fast=fast)
                logging.getLogger("appliance.transport.relay").addFilter(_Prefix(i))
                code = asyncio.run(_work(relay, controls[i][1]))
            except BaseException:
                log.exception("relay: worker %d failed", i)
            finally:
                logging.shutdown()  # (flushed: os._exit skips what exit would do)
                os._exit(code)
        pids.append(pid)
    for s in [*socks, *(s for pair in inboxes for s in pair), *(pair[1] for pair in controls)]:
        s.close()
    log.info("relay: %d workers on port %d, %d groups each at most", workers, where[1], share)
    return asyncio.run(_supervise(pids, [pair[0] for pair in controls], stats, (_show(where), _show(server))))


class _Prefix(logging.Filter):
    def __init__(self, index: int):
        super().__init__()
        self.tag = f"relay[{index}]:"

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("relay:"):
            record.msg = self.tag + record.msg[len("relay:"):]
        return True


def _until_signalled() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(relay: Relay, stats: tuple[str, int] | None) -> int:
    """The one process: until SIGTERM/SIGINT."""
    await relay.start()

    async def view() -> dict:
        return relay_stats.view(relay)
    runner = await relay_stats.serve(view, *stats) if stats else None
    if stats:
        log.info("relay: stats on http://%s/stats (and /metrics, /noalbs/...)", _show(stats))
    try:
        await _until_signalled().wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await relay.stop()
    return 0


async def _work(relay: Relay, control: socket.socket) -> int:
    """A worker: until SIGTERM/SIGINT, or until its supervisor is gone (its control closes)."""
    await relay.start()
    stop = _until_signalled()
    reader, writer = await asyncio.open_connection(sock=control)

    async def answer():
        try:
            while question := await reader.readline():  # b"view SEQ"
                writer.write(json.dumps({"seq": question.split()[-1].decode(),
                                         "view": relay_stats.view(relay)}).encode() + b"\n")
                await writer.drain()
        except OSError:
            pass
        finally:  # (the supervisor is gone: no worker is left behind without one)
            stop.set()
    task = asyncio.get_running_loop().create_task(answer(), name="relay-control")
    try:
        await stop.wait()
    finally:
        task.cancel()
        await relay.stop()
        writer.close()
    return 0


def merged(parts: list[dict | None]) -> dict:
    """The workers' views as one: the groups side by side, the counters summed."""
    got = [p for p in parts if p is not None]
    dropped: Counter[str] = Counter()
    for p in got:
        dropped.update(p["relay"]["dropped"])
    first = got[0]["relay"] if got else {"listen": "", "server": ""}
    summed = {k: sum(p["relay"][k] for p in got) for k in ("groups", "links", "forwarded", "handed_over")}
    relay = {"listen": first["listen"], "server": first["server"], "workers": len(parts),
             "workers_answering": len(got), **summed,
             "busy": max((p["relay"]["busy"] for p in got), default=0.0), "dropped": dict(dropped)}
    return {"relay": relay, "groups": [g for p in got for g in p["groups"]]}


async def _supervise(pids: list[int], controls: list[socket.socket], stats: tuple[str, int] | None,
                     shown: tuple[str, str]) -> int:
    loop = asyncio.get_running_loop()
    streams = [await asyncio.open_connection(sock=c, limit=VIEW_LIMIT) for c in controls]
    asking = asyncio.Lock()  # (one question at a time on each control)
    seq = 0

    async def ask(reader, writer) -> dict | None:
        """The worker's view, or None; an answer that came too late to an earlier question is
        skipped by its number."""
        try:
            writer.write(f"view {seq}\n".encode())
            await writer.drain()
            async with asyncio.timeout(ANSWER_WITHIN):
                while (answer := json.loads(await reader.readline()))["seq"] != str(seq):
                    pass
            return answer["view"]
        except (asyncio.TimeoutError, OSError, ValueError, KeyError):
            return None

    async def view() -> dict:
        nonlocal seq
        async with asking:
            seq += 1
            v = merged(await asyncio.gather(*(ask(r, w) for r, w in streams)))
        v["relay"]["listen"], v["relay"]["server"] = shown
        return v

    stop, ended, fds = _until_signalled(), {}, []

    def on_end(index: int, fd: int) -> None:
        """A worker that ends: killed or failed (exit 1) ends the relay with exit 1; stopped (exit
        0: a SIGTERM for it, as systemd sends one to every process of the unit at once) with 0."""
        loop.remove_reader(fd)
        _, status = os.waitpid(pids[index], 0)
        ended[index] = os.waitstatus_to_exitcode(status)
        stop.set()
    for i, pid in enumerate(pids):
        fds.append(fd := os.pidfd_open(pid))
        loop.add_reader(fd, on_end, i, fd)
    runner = await relay_stats.serve(view, *stats) if stats else None
    if stats:
        log.info("relay: stats on http://%s/stats (and /metrics, /noalbs/...)", _show(stats))
    try:
        await stop.wait()
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
        failed = dict(ended)
        if runner is not None:
            await runner.cleanup()
        for _, writer in streams:
            writer.close()
        await loop.run_in_executor(None, _end_all, [p for i, p in enumerate(pids) if i not in ended])
    for index, code in failed.items():
        if code:
            log.error("relay: worker %d ended (exit %s): the relay stops with it", index, code)
        else:
            log.info("relay: worker %d was stopped: the relay stops with it", index)
    return 1 if any(failed.values()) else 0


def _end_all(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL for a worker still there after STOP_WITHIN."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)  # (one that ended already is a zombie until waited for: no error)
    deadline = time.monotonic() + STOP_WITHIN
    for pid in pids:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)
