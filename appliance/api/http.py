"""The HTTP API and the phone page, inside the daemon's asyncio loop (aiohttp).

Bound to 127.0.0.1 by default. Bound anywhere else it requires `api.token`
(the daemon refuses to expose an unauthenticated API): a request must carry it
as `Authorization: Bearer <token>` or the cookie set by POST /api/login. Tokens
are compared in constant time; an address that fails 5 times in a minute is
refused (429) for a minute. No secret is ever in a response or a log line.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections import defaultdict, deque
from fractions import Fraction
from pathlib import Path

from aiohttp import web

from appliance.api.metrics import render_metrics
from appliance.errors import ComponentError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
OPENAPI = Path(__file__).parent / "openapi.json"
COOKIE = "appliance_token"
FAILURES_ALLOWED = 5
FAILURE_WINDOW = 60.0
EVENT_EVERY = 1.0


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ApiServer:
    name = "api"

    def __init__(self, config, service, media=None):
        self.cfg = config.api
        self.service = service
        self.media = media
        self.token = self.cfg.token.get_secret_value()
        self.needs_token = bool(self.token) or not is_loopback(self.cfg.bind)
        self._runner: web.AppRunner | None = None
        self._failures: dict[str, deque] = defaultdict(deque)
        self._subscribers: set[asyncio.Queue] = set()
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.needs_token and not self.token:
            raise ComponentError(f"api.bind = {self.cfg.bind} is not loopback: set api.token (the API steers the show)")
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app.add_routes([
            web.get("/", self._index),
            web.get("/api/openapi.json", self._openapi),
            web.get("/api/status", self._status),
            web.post("/api/live", self._live),
            web.post("/api/stop", self._stop),
            web.post("/api/preflight", self._preflight),
            web.post("/api/usage/reset", self._usage_reset),
            web.post("/api/login", self._login),
            web.get("/api/events", self._events),
            web.get("/api/snapshot.jpg", self._snapshot),
            web.get("/metrics", self._metrics),
            web.static("/static", STATIC),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.bind, self.cfg.port)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise ComponentError(f"cannot listen on {self.cfg.bind}:{self.cfg.port}: {e.strerror}") from None
        self.url = f"http://{self.cfg.bind}:{self.cfg.port}/"
        self.service.listeners.append(self._on_state)
        log.info("status page and API on %s%s", self.url, " (token required)" if self.needs_token else "")

    async def stop(self) -> None:
        if self._on_state in self.service.listeners:
            self.service.listeners.remove(self._on_state)
        for q in list(self._subscribers):
            q.put_nowait(None)
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    def status(self) -> dict:
        return {"url": self.url, "token_required": self.needs_token, "event_clients": len(self._subscribers)}

    # --- authentication ------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        open_paths = request.path == "/" or request.path.startswith("/static/") or request.path in (
            "/api/login", "/api/openapi.json")
        if not self.needs_token or open_paths:
            return await handler(request)
        peer = request.remote or "?"
        if self._blocked(peer):
            return _error(429, "too many failed attempts: wait a minute")
        given = request.headers.get("Authorization", "")
        given = given[7:] if given.startswith("Bearer ") else request.cookies.get(COOKIE, "")
        if not self._check(peer, given):
            return _error(401, "token required: send Authorization: Bearer <api.token>, or log in on the page")
        return await handler(request)

    def _blocked(self, peer: str) -> bool:
        q, now = self._failures[peer], time.monotonic()
        while q and now - q[0] > FAILURE_WINDOW:
            q.popleft()
        return len(q) >= FAILURES_ALLOWED

    def _check(self, peer: str, given: str) -> bool:
        ok = bool(given) and hmac.compare_digest(given.encode(), self.token.encode())
        if not ok:
            self._failures[peer].append(time.monotonic())
            if len(self._failures[peer]) == FAILURES_ALLOWED:
                log.warning("api: %d failed token attempts from %s: refusing it for a minute", FAILURES_ALLOWED, peer)
        return ok

    async def _login(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        if self._blocked(peer):
            return _error(429, "too many failed attempts: wait a minute")
        try:
            body = await request.json()
            token = body["token"] if isinstance(body, dict) and isinstance(body.get("token"), str) else None
        except (ValueError, KeyError):
            token = None
        if token is None:
            return _error(400, 'send {"token": "..."}')
        if not self.needs_token:
            return web.json_response({"ok": True})
        if not self._check(peer, token):
            return _error(401, "wrong token")
        resp = web.json_response({"ok": True})
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", max_age=30 * 86400)
        return resp

    # --- pages and API -----------------------------------------------------------------------------

    async def _index(self, request):
        return web.FileResponse(STATIC / "index.html")

    async def _openapi(self, request):
        return web.FileResponse(OPENAPI, headers={"Content-Type": "application/json"})

    async def _status(self, request):
        return web.json_response(self.service.status())

    async def _live(self, request):
        return web.json_response(await self.service.handle_command({"cmd": "live", "source": "web"}))

    async def _stop(self, request):
        return web.json_response(await self.service.handle_command({"cmd": "stop", "source": "web"}))

    async def _preflight(self, request):
        body = await _json_object(request, '{"seconds": 12}')
        if isinstance(body, web.Response):
            return body
        answer = await self.service.handle_command({"cmd": "preflight", "seconds": body.get("seconds", 12)})
        if not answer.get("ok"):
            # 409: the request is fine, the box is not in a state to run it (live, no stream, running).
            return _error(409, answer.get("error", "pre-flight refused"))
        return web.json_response(answer["preflight"])

    async def _usage_reset(self, request):
        body = await _json_object(request, '{"link": "wwan0"}, or empty for every uplink')
        if isinstance(body, web.Response):
            return body
        answer = await self.service.handle_command({"cmd": "usage-reset", **({"link": body["link"]} if "link" in body else {})})
        if not answer.get("ok"):
            return _error(404 if "no uplink" in answer.get("error", "") else 400, answer.get("error", "refused"))
        return web.json_response(answer["reset_mb"])

    async def _snapshot(self, request):
        frame = getattr(self.media, "latest_frame", None)
        if frame is None:
            return _error(503, "no video frame yet")
        jpeg = await asyncio.to_thread(_jpeg, frame)
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _metrics(self, request):
        body, content_type = render_metrics(self.service.status())
        return web.Response(body=body, headers={"Content-Type": content_type})

    # --- server-sent events ------------------------------------------------------------------------

    def _on_state(self, before, after) -> None:
        for q in list(self._subscribers):
            if q.qsize() < 10:
                q.put_nowait("state")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await resp.prepare(request)
        q: asyncio.Queue = asyncio.Queue()
        self._subscribers.add(q)
        try:
            while True:
                await resp.write(f"event: status\ndata: {json.dumps(self.service.status())}\n\n".encode())
                try:
                    if await asyncio.wait_for(q.get(), EVENT_EVERY) is None:
                        break
                except asyncio.TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._subscribers.discard(q)
        return resp


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


async def _json_object(request, example: str) -> dict | web.Response:
    """The request's body as a JSON object (empty: {}), or the 400 that says what was expected."""
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        return _error(400, f"the body must be JSON: {example}")
    if not isinstance(body, dict):
        return _error(400, f"the body must be a JSON object: {example}")
    return body


def _jpeg(frame, width: int = 640) -> bytes:
    import av

    small = frame.reformat(width=width, height=max(2, round(frame.height * width / frame.width / 2) * 2),
                           format="yuvj420p")
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = small.width, small.height, "yuvj420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"qscale": "5"}
    enc.open()
    small.pts = 0
    packets = enc.encode(small) + enc.encode(None)
    return b"".join(bytes(p) for p in packets)
