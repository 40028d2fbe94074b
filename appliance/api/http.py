"""The HTTP API and the phone page, inside the daemon's asyncio loop (aiohttp).

Closed by default. Every control action (POST: live, stop, pre-flight, usage
reset) needs the token, on loopback too: `api.token`, or where none is set one
the daemon makes at first start in its state directory (api.token, readable by
the appliance group only: `appliance api-token` prints it). A local user outside
that group can read the status on loopback, never steer the show. Bound
anywhere but loopback, or with `api.token` set, every request needs the token.

A request carries it as `Authorization: Bearer <token>`, or the session cookie
that POST /api/login sets (a random session id, never the token). POSTs from a
page of another origin (another site, or another port of this host) are refused
(403), and so is a Host the box is not known by (a DNS-rebinding page). Tokens
are compared in constant time; a source (an IPv4 address, or an IPv6 /64) that
fails 5 times in a minute is refused (429) for a minute, and the table of
failures is bounded. Malformed headers or bodies get 400/401 and count as
failures, never a 500. No secret is ever in a response or a log line.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import time
from collections import OrderedDict, deque
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from appliance.api.metrics import render_metrics
from appliance.paths import state_dir
from appliance.errors import ComponentError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
OPENAPI = Path(__file__).parent / "openapi.json"
COOKIE = "appliance_session"
SESSION_DAYS = 30
SESSIONS_MAX = 256
FAILURES_ALLOWED = 5
FAILURE_WINDOW = 60.0
FAILURE_SOURCES_MAX = 4096
EVENT_EVERY = 1.0
TOKEN_FILE = "api.token"


def source_of(peer: str) -> str:
    """What the failure limit counts against: an IPv4 address, or an IPv6 /64 (one
    subscriber's: rotating through its addresses gains nothing)."""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip) if ip.version == 4 else str(ipaddress.ip_network(f"{ip}/64", strict=False))


def load_or_make_token(directory: Path) -> str:
    """Blocking (a thread): the daemon's own token, made once, readable by its group only."""
    path = directory / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if len(token) >= 16:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(24)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.fchmod(fd, 0o640)
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


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
        self.token_file = state_dir(config) / TOKEN_FILE
        # Reads need the token too: bound beyond loopback, or when the user set one.
        self.needs_token = bool(self.token) or not is_loopback(self.cfg.bind)
        self.hosts = {h.lower() for h in self.cfg.hosts} | _own_names(config.device.name)
        self._runner: web.AppRunner | None = None
        self._failures: OrderedDict[str, deque] = OrderedDict()
        self._sessions: OrderedDict[str, float] = OrderedDict()  # session id -> until (wall clock)
        self._subscribers: set[asyncio.Queue] = set()
        self._snapshots = asyncio.Lock()
        self.url = ""

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.needs_token and not self.token:
            raise ComponentError(f"api.bind = {self.cfg.bind} is not loopback: set api.token (the API steers the show)")
        if not self.token:
            try:
                self.token = await asyncio.to_thread(load_or_make_token, self.token_file.parent)
            except OSError as e:
                # (a card remounted read-only): the page still shows the box; control actions
                # over HTTP wait for a token anyone can read, the button and the socket work.
                self.token = secrets.token_urlsafe(24)
                log.error("api: cannot keep a token in %s (%s): the API takes no control action until the "
                          "daemon restarts with it writable, or api.token is set", self.token_file, e.strerror or e)
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
        return {"url": self.url, "token_required": self.needs_token, "event_clients": len(self._subscribers),
                **({"token_file": str(self.token_file)} if not self.cfg.token.get_secret_value() else {})}

    # --- authentication ------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        peer = request.remote or "?"
        host = _host_name(request.headers.get("Host", ""))
        if host is None or not (_literal(host) or host in self.hosts):
            # A page on a name that resolves here (DNS rebinding) would read the API as same-origin.
            return _error(403, f"this box is not known by the name {request.headers.get('Host', '')[:80]!r}: "
                               "add it to api.hosts")
        if request.method == "POST" and not self._same_origin(request):
            log.warning("api: refused a POST to %s from the page of another origin", request.path)
            return _error(403, "cross-origin request refused")
        open_paths = request.path == "/" or request.path.startswith("/static/") or request.path in (
            "/api/login", "/api/openapi.json")
        if open_paths or (request.method in ("GET", "HEAD") and not self.needs_token):
            return await handler(request)
        if self._blocked(peer):
            return _error(429, "too many failed attempts: wait a minute")
        if not self._authorized(request, peer):
            return _error(401, "token required: send Authorization: Bearer <token> (`appliance api-token`), "
                               "or log in on the page")
        return await handler(request)

    def _same_origin(self, request: web.Request) -> bool:
        """A browser names the page that sent a POST; it must be this very origin (host and
        port: a page on another port of the same host is same-site, not same-origin)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
        try:
            o = urlsplit(origin)
            return o.scheme in ("http", "https") and o.netloc.lower() == request.headers.get("Host", "").lower()
        except ValueError:
            return False

    def _authorized(self, request: web.Request, peer: str) -> bool:
        given = request.headers.get("Authorization")
        if given is not None:
            return self._check(peer, given[7:] if given.startswith("Bearer ") else "")
        sid = request.cookies.get(COOKIE)
        if sid is not None:
            until = self._sessions.get(sid)
            if until is not None and until > time.time():
                return True
            self._sessions.pop(sid, None)
            self._failed(peer)
            return False
        self._failed(peer)
        return False

    def _blocked(self, peer: str) -> bool:
        q = self._failures.get(source_of(peer))
        if q is None:
            return False
        now = time.monotonic()
        while q and now - q[0] > FAILURE_WINDOW:
            q.popleft()
        return len(q) >= FAILURES_ALLOWED

    def _check(self, peer: str, given: str) -> bool:
        # Header values arrive as str, undecodable bytes as lone surrogates: compare bytes.
        ok = bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self.token.encode())
        if not ok:
            self._failed(peer)
        return ok

    def _failed(self, peer: str) -> None:
        src, now = source_of(peer), time.monotonic()
        q = self._failures.pop(src, None) or deque()
        q.append(now)
        while len(q) > FAILURES_ALLOWED:
            q.popleft()
        self._failures[src] = q  # the most recent last: the stalest go first when the table is full
        while len(self._failures) > FAILURE_SOURCES_MAX:
            self._failures.popitem(last=False)
        if len(q) == FAILURES_ALLOWED and now - q[0] <= FAILURE_WINDOW:
            log.warning("api: %d failed token attempts from %s: refusing it for a minute", FAILURES_ALLOWED, src)

    async def _login(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        if self._blocked(peer):
            return _error(429, "too many failed attempts: wait a minute")
        try:
            body = await request.json()
            token = body["token"] if isinstance(body, dict) and isinstance(body.get("token"), str) else None
        except (ValueError, KeyError):  # UnicodeDecodeError is a ValueError
            token = None
        if token is None:
            self._failed(peer)
            return _error(400, 'send {"token": "..."}')
        if not self._check(peer, token):
            return _error(401, "wrong token")
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = time.time() + SESSION_DAYS * 86400
        while len(self._sessions) > SESSIONS_MAX:
            self._sessions.popitem(last=False)
        resp = web.json_response({"ok": True})
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", max_age=SESSION_DAYS * 86400)
        return resp

    # --- pages and API -----------------------------------------------------------------------------

    async def _index(self, request):
        return web.FileResponse(STATIC / "index.html")

    async def _openapi(self, request):
        return web.FileResponse(OPENAPI, headers={"Content-Type": "application/json"})

    async def _status(self, request):
        return web.json_response(self.service.status())

    async def _live(self, request):
        answer = await self.service.handle_command({"cmd": "live", "source": "web"})
        return web.json_response(answer, status=200 if answer.get("ok") else 409)  # 409: refused while booting

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
        if self._snapshots.locked():
            # One encode at a time, never a queue of them: a page polling from many phones
            # (or a script) must not eat the CPU the show needs, nor the executor's threads.
            return _error(503, "busy encoding a snapshot: try again")
        async with self._snapshots:
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


def _own_names(device: str) -> set[str]:
    names = {"localhost", socket.gethostname().lower(), device.lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return names | {f"{n}.local" for n in list(names) if n and not n.endswith(".local")}


def _host_name(host: str) -> str | None:
    """The name in a Host header, without its port; None if it is no host at all."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return None
    return name.lower() if name else None


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


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
