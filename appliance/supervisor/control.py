"""Local control over a unix socket: one JSON object per line, each way.

    -> {"cmd": "status"}            <- {"ok": true, "status": {...}}
    -> {"cmd": "live"}              <- {"ok": true, "state": "GOING_LIVE"}
    -> {"cmd": "nonsense"}          <- {"ok": false, "error": "unknown command ..."}

The socket is owner/group only (0660 in a 0750 directory): the appliance group
is who may steer the box locally.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import Awaitable, Callable

from appliance.errors import AlreadyRunning, ControlError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
SOCKET_NAME = "control.sock"

Handler = Callable[[dict], Awaitable[dict]]


class ControlServer:
    name = "control"

    def __init__(self, path: Path, handler: Handler):
        self.path = Path(path)
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise AlreadyRunning(f"{self.path}: another appliance daemon is already running")
            self.path.unlink()
        old = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    def status(self) -> dict:
        return {"socket": str(self.path)}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _reply(writer, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"})
                    return
                if not line:
                    return
                await _reply(writer, await self._answer(line))
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except ValueError as e:
            return {"ok": False, "error": f"request is not JSON: {e}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'request must be a JSON object with a "cmd" string'}
        try:
            return await self.handler(request)
        except Exception as e:  # a bad request must never take the daemon down
            log.exception("control command %r failed", request.get("cmd"))
            return {"ok": False, "error": f"{request['cmd']}: internal error: {e}"}


async def _reply(writer: asyncio.StreamWriter, answer: dict) -> None:
    writer.write(json.dumps(answer).encode() + b"\n")
    await writer.drain()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def request(path: Path, cmd: str, timeout: float = 5.0, **args) -> dict:
    """Send one command to the daemon and return its answer (client side)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"{path}: no control socket; is the appliance running? (systemctl status appliance)") from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied; run as root or join the appliance group") from None
        except OSError as e:
            raise ControlError(f"{path}: cannot connect: {e.strerror}") from None
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                raise ControlError(f"{path}: no answer within {timeout:g} s") from None
            if not chunk:
                raise ControlError(f"{path}: the daemon closed the connection")
            buf += chunk
    return json.loads(buf)
