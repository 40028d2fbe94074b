"""A named background thread with a stop event and a heartbeat, for a component
whose thread is its own loop (capture, serial polling, the bond). The threads that
live for one session of an output (media, recorder, the senders) start their own
and open their heartbeat with heartbeat.beating(); every long-running thread has one."""

from __future__ import annotations

import logging
import threading

from appliance import heartbeat

log = logging.getLogger(__name__)


class Worker:
    """Mixin: `start()` runs `self._run()` in a daemon thread named `worker_name`;
    `stop()` sets `self._stop` and joins. `_run` must return soon after `_stop` is set.
    `_run` calls `self.heartbeat.beat()` each time round its loop: a worker that has not
    for `stuck_after` seconds is reported stuck (a restart if `show_needs` it)."""

    worker_name = "worker"
    join_timeout = 5.0
    stuck_after = 10.0
    show_needs = False

    def _init_worker(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeat = heartbeat.Heartbeat(self.worker_name, self.stuck_after)  # (registered by _main)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name=self.worker_name, daemon=True)
        self._thread.start()

    def stop(self) -> bool:
        """True once the thread is gone (or never ran): only then may the caller touch its state."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.join_timeout)
            if thread.is_alive():
                log.error("thread %s did not stop within %g s", thread.name, self.join_timeout)
                return False
        return True

    def _main(self) -> None:
        with heartbeat.beating(self.worker_name, self.stuck_after, show=self.show_needs) as self.heartbeat:
            self._run()

    def _run(self) -> None:
        raise NotImplementedError
