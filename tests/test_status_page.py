"""The live status page in a real headless Chromium, driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
import websockets

from monitor.model import PriceTick, wall_clock_ms
from tests.test_daemon import until
from tests.test_http import http_settings, opening_ticks, push_each, running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*")


class DevTools:
    """A minimal DevTools protocol client: commands on one page session, replies matched by id."""

    def __init__(self, ws):
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._reader = asyncio.create_task(self._read())
        self.session: str | None = None

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = orjson.loads(raw)
            fut = self._pending.pop(msg.get("id"), None)  # events (no id) are not needed here
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def send(self, method: str, timeout: float = 15, **params) -> dict:
        cid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        msg = {"id": cid, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            msg["sessionId"] = self.session
        await self._ws.send(orjson.dumps(msg).decode())
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    async def wait_for(self, js_condition: str, timeout_ms: int = 10_000):
        """Resolves with the JS expression's value once truthy; fails after timeout_ms (in the page)."""
        expr = f"""new Promise((resolve, reject) => {{
            const start = Date.now();
            (function check() {{
                let v; try {{ v = ({js_condition}); }} catch (e) {{ v = null; }}
                if (v) resolve(v);
                else if (Date.now() - start > {timeout_ms}) reject(new Error("timed out: " + {orjson.dumps(js_condition).decode()}));
                else setTimeout(check, 20);
            }})();
        }})"""
        result = await self.send("Runtime.evaluate", timeout=timeout_ms / 1000 + 5, expression=expr,
                                 awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(result["exceptionDetails"].get("exception", {}).get("description", result))
        return result["result"].get("value")

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()


@contextlib.asynccontextmanager
async def chromium(profile: Path):
    """Headless Chromium with a fresh profile; yields a DevTools client attached to a blank page."""
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        await until(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 2, timeout=30,
                    what="Chromium's DevTools port")
        port, path = port_file.read_text().splitlines()[:2]
        ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
        tools = DevTools(ws)
        target = await tools.send("Target.createTarget", url="about:blank")
        tools.session = (await tools.send("Target.attachToTarget", targetId=target["targetId"], flatten=True))["sessionId"]
        try:
            yield tools
        finally:
            await tools.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


HEALTH = "document.querySelector('tr[data-account=\"main\"] [data-health]')"


async def test_status_page_shows_accounts_and_follows_prices(tmp_path: Path, contract_config: Path, monkeypatch) -> None:
    monkeypatch.setenv("CM_TEST_HTTP_TOKEN", "page-token")
    settings = http_settings(contract_config, {"token_env": "CM_TEST_HTTP_TOKEN"})
    async with running(settings) as (d, url, feed), chromium(tmp_path / "profile") as page:
        await push_each(d, feed, opening_ticks())  # health (57000 + 24750) / 50000 = 1.635
        await page.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
        await page.send("Page.navigate", url=f"{url}/?token=page-token")

        assert await page.wait_for(f"{HEALTH} && {HEALTH}.textContent") == "1.635"
        assert await page.wait_for("document.getElementById('conn').textContent") == "live"
        row = await page.wait_for("document.querySelector('tr[data-account=\"main\"]').innerText")
        assert "health_factor" in row and "ok" in row
        assert "BTC @ " in row and "%" in row  # the liquidation price and the distance to it
        # Readable on a phone: nothing wider than the screen.
        assert await page.wait_for("document.documentElement.scrollWidth <= window.innerWidth ? 'fits' : ''") == "fits"

        feed.push(PriceTick("BTC/USDT", 40000, wall_clock_ms()))  # (38000 + 24750) / 50000 = 1.255: below warn
        assert await page.wait_for(f"{HEALTH}.textContent === '1.255' && {HEALTH}.textContent") == "1.255"
        level = await page.wait_for("document.querySelector('tr[data-account=\"main\"] td.level').textContent")
        assert level == "warn"
        alert = await page.wait_for("document.querySelector('[data-alert=\"main/warn\"]')?.textContent")
        assert alert.startswith("main / warn health 1.255")
        colour = await page.wait_for("getComputedStyle(document.querySelector('tr[data-account=\"main\"] .fill'))"
                                     ".backgroundColor")
        assert colour == "rgb(249, 168, 37)"  # the first level's amber

        shot = await page.send("Page.captureScreenshot", format="png")
        (tmp_path / "status-phone.png").write_bytes(base64.b64decode(shot["data"]))


async def test_status_page_without_the_token_is_refused(tmp_path: Path, contract_config: Path, monkeypatch) -> None:
    monkeypatch.setenv("CM_TEST_HTTP_TOKEN", "page-token")
    settings = http_settings(contract_config, {"token_env": "CM_TEST_HTTP_TOKEN"})
    async with running(settings) as (d, url, feed), chromium(tmp_path / "profile") as page:
        await page.send("Page.navigate", url=f"{url}/")
        text = await page.wait_for("document.body && document.body.innerText.includes('unauthorized') && document.body.innerText")
        assert "unauthorized" in text
