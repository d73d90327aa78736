"""docs/nginx.conf as written, in front of two ``paylive serve`` workers on one Redis:
real nginx from the distribution (/usr/sbin/nginx) with a config of its own in a
temporary prefix, on a free port.

Through it: HTTP, sockets (the upgrade), streamed answers, and client addresses from
``X-Forwarded-For`` only when the proxy is trusted. The two workers sit behind a plain
round-robin upstream: commands for one session land on either, and its socket hears
every event, so no sticky sessions are needed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin, Subprotocol

from ..support import redisproc, tls
from ..support.client import create, merchant, open_socket, session_url
from ..support.ports import free_port
from ..support.processes import stop as stop_process
from ..support.servers import Server

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
NGINX = os.environ.get("PAYLIVE_NGINX", "/usr/sbin/nginx")
OK_CARD = {"payment_method": {"card": "4242424242424242"}}


def nginx_config(prefix: Path, port: int, upstreams: list[int]) -> Path:
    """docs/nginx.conf in a minimal main config; only its listen port and upstream
    addresses are changed."""
    site = (ROOT / "docs" / "nginx.conf").read_text()
    site, listens = re.subn(r"listen 8080;", f"listen 127.0.0.1:{port};", site)
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in upstreams)
    site, upstream_lines = re.subn(r"(?m)^    server 127\.0\.0\.1:800[12];\n", "", site)
    site = site.replace("    keepalive 64;", servers + "    keepalive 64;")
    assert listens == 1 and upstream_lines == 2, "docs/nginx.conf changed shape"
    (prefix / "paylive.conf").write_text(site)
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {prefix / "paylive.conf"};
}}
"""
    path = prefix / "nginx.conf"
    path.write_text(main)
    return path


class Nginx:
    def __init__(self, prefix: Path, upstreams: list[int]) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = nginx_config(prefix, self.port, upstreams)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        test = subprocess.run(
            [NGINX, "-t", "-p", str(self.prefix), "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert test.returncode == 0, test.stderr
        with open(self.prefix / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.prefix), "-c", str(self.config), "-g", "daemon off;"],
                stdout=err,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if (
                    httpx.get(self.url + "/healthz", timeout=1, verify=tls.CONTEXT).status_code
                    == 200
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"nginx did not answer:\n{self.log()}")

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in (self.prefix / "stderr.log", self.prefix / "error.log")
            if p.exists()
        )

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGQUIT, 10)  # graceful: finish requests, then exit


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not os.access(NGINX, os.X_OK):
        if os.environ.get("PAYLIVE_REQUIRE_NGINX") == "1":
            pytest.fail(f"{NGINX} is missing (.ci/run installs nginx)")
        pytest.skip(f"{NGINX} is missing")
    if redisproc.REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    base = tmp_path_factory.mktemp("nginx-stack")
    base.chmod(0o755)
    redis = redisproc.start_redis(base / "redis")
    env = {
        "PAYLIVE_REDIS_URL": redis.url,
        # nginx connects from 127.0.0.1; the test's clients come from other loopback
        # addresses, so the server can tell the two apart.
        "PAYLIVE_TRUSTED_PROXIES": "127.0.0.1",
        "PAYLIVE_DEMO_PER_MINUTE": "1",
    }
    workers = [Server(env), Server(env)]
    proxy: Nginx | None = None
    try:
        for worker in workers:
            worker.start()
        prefix = base / "nginx"
        prefix.mkdir()
        proxy = Nginx(prefix, [w.port for w in workers]).start()
        yield {"nginx": proxy, "workers": workers}
    finally:
        if proxy is not None:
            proxy.stop()
        for worker in workers:
            worker.close()
        redis.stop()


def client_from(address: str, base_url: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address, verify=tls.CONTEXT)
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=10)


async def test_http_and_sockets_through_nginx_to_either_worker(stack: dict[str, Any]) -> None:
    proxy: Nginx = stack["nginx"]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        session = await create(http, order_id="order-nginx-1")
        ws_url = proxy.url.replace("http://", "ws://")
        socket = await open_socket(session_url(ws_url, session))
        try:
            first = await socket.recv()
            assert first["type"] == "snapshot"
            # Round robin: reads and the payment land on both workers; the socket, on
            # one of them, hears every event all the same.
            for _ in range(4):
                reply = await http.get(f"/api/sessions/{session['id']}", headers=merchant())
                assert reply.status_code == 200
            reply = await http.post(
                f"/api/sessions/{session['id']}/attempts", json=OK_CARD, headers=merchant()
            )
            assert reply.status_code == 202, reply.text
            await socket.state("processing")
            await socket.state("succeeded", timeout=10)
            seqs = [m["seq"] for m in socket.durable()]
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
        finally:
            await socket.conn.close()
    access = (proxy.prefix / "access.log").read_text()
    assert "GET /ws/sessions/" in access and " 101 " in access, access[-2000:]


async def test_a_browser_socket_from_the_proxied_origin_is_same_origin(
    stack: dict[str, Any],
) -> None:
    """A page served through nginx on a port of its own opens its socket there: nginx
    passes the Host the browser sent (port included), so the Origin matches it."""
    proxy: Nginx = stack["nginx"]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        session = await create(http, order_id="order-nginx-origin")
    site = f"pay.test:{proxy.port}"  # a name, not loopback: no localhost exception
    url = session_url(f"ws://{site}", session)
    async with connect(
        url,
        host="127.0.0.1",
        port=proxy.port,
        origin=Origin(f"http://{site}"),
        subprotocols=[Subprotocol("paylive.v1.json")],
        proxy=None,
        open_timeout=5,
    ) as conn:
        with anyio.fail_after(5):
            first = json.loads(await conn.recv())
    assert first["type"] == "snapshot"


async def test_streamed_answers_are_not_buffered(stack: dict[str, Any]) -> None:
    """A streamed answer (text/event-stream) reaches the client through nginx while
    it is still open, event by event."""
    proxy: Nginx = stack["nginx"]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        spec = (await http.get("/openapi.json")).json()
        streams = [
            path
            for path, item in spec["paths"].items()
            if re.match(r"^/api/sessions/\{[^}]+\}/", path)
            and "text/event-stream" in str(item.get("get", {}).get("responses", {}))
        ]
        if not streams:
            pytest.skip("this build serves no text/event-stream route (SSE: issue 18)")
        session = await create(http, order_id="order-nginx-sse")
        path = re.sub(r"\{[^}]+\}", session["id"], streams[0], count=1)
        headers = {
            "Authorization": f"Bearer {session['client_secret']}",
            "Accept": "text/event-stream",
        }
        seen = ""
        async with http.stream("GET", path, headers=headers) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            with anyio.fail_after(10):
                chunks = answer.aiter_text()
                # The first event (the snapshot) arrives while the stream stays open.
                while "data:" not in seen:
                    seen += await chunks.__anext__()
                reply = await http.post(
                    f"/api/sessions/{session['id']}/attempts", json=OK_CARD, headers=merchant()
                )
                assert reply.status_code == 202
                while "processing" not in seen:
                    seen += await chunks.__anext__()


async def test_client_addresses_from_x_forwarded_for_only_from_a_trusted_proxy(
    stack: dict[str, Any],
) -> None:
    """Seen through the per-address /demo limit (1 here, per worker): through nginx,
    every client address is its own, so none is limited; straight to a worker from an
    address that is no trusted proxy, X-Forwarded-For is ignored and the one address
    is limited at once, whatever it claims."""
    proxy: Nginx = stack["nginx"]
    worker: Server = stack["workers"][0]
    for n in range(2, 8):
        async with client_from(f"127.0.0.{n}", proxy.url) as http:
            reply = await http.get("/demo", follow_redirects=False)
            assert reply.status_code < 400, (n, reply.status_code, reply.text)
    statuses = []
    async with client_from("127.0.1.1", worker.url) as http:
        for n in range(3):
            reply = await http.get(
                "/demo", headers={"X-Forwarded-For": f"203.0.113.{n}"}, follow_redirects=False
            )
            statuses.append(reply.status_code)
    assert statuses[0] < 400 and statuses[1:] == [429, 429], statuses
