"""A named background thread with a stop event: the one way our components run
blocking work (capture, serial polling) beside the asyncio loop."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Worker:
    """Mixin: `start()` runs `self._run()` in a daemon thread named `worker_name`;
    `stop()` sets `self._stop` and joins. `_run` must return soon after `_stop` is set."""

    worker_name = "worker"
    join_timeout = 5.0

    def _init_worker(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.worker_name, daemon=True)
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

    def _run(self) -> None:
        raise NotImplementedError
