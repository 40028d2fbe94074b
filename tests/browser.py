"""Headless Chromium (Debian's, driven by Playwright) for the phone page: what a
phone shows, screenshots for the eye, and the page's JS heap through CDP."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def phone(netns: str | None = None, workdir: Path | None = None):
    """A 360 px wide page; with netns, Chromium runs in that namespace (where the daemon's API is)."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "scripts/test installs Debian's chromium"
    executable = CHROMIUM
    if netns is not None:
        wrapper = Path(workdir) / "chromium-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {CHROMIUM} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
        executable = str(wrapper)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 360, "height": 780})
            page.errors = []
            page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            yield page
        finally:
            browser.close()


def log_in(page, base: str, token: str) -> None:
    """As the page's own login form does (from the browser: it may be in another namespace)."""
    page.goto(base + "/")
    status = page.evaluate("""async (token) => (await fetch('/api/login', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({token})})).status""", token)
    assert status == 200, status
    page.reload()


def canvas_ink(page, chart_id: str) -> int:
    """How many pixels of a chart's canvas are drawn (0: blank or no chart yet)."""
    return page.evaluate("""(id) => {
        const c = document.querySelector('#' + id + ' canvas');
        if (!c || !c.width) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
        return n;
    }""", chart_id)


def heap_mb(page) -> float:
    """The page's live JS heap after a full garbage collection (CDP)."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("HeapProfiler.enable")
        cdp.send("HeapProfiler.collectGarbage")
        return cdp.send("Runtime.getHeapUsage")["usedSize"] / 1e6
    finally:
        cdp.detach()
