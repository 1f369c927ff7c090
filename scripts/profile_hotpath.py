"""Quick hot-path measurement: a fast local upstream, `promptproxy serve` on SQLite, N requests at concurrency C.

Prints requests/s, latency percentiles and the gateway's CPU time per request (from /proc). With --py-spy it
also records a py-spy profile of the gateway process (speedscope JSON or a flame SVG).

    python scripts/profile_hotpath.py --requests 4000 --concurrency 32 [--py-spy out.svg]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({
    "id": "chatcmpl-x", "object": "chat.completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY


def fast_upstream(port_holder: list, ready: threading.Event) -> None:
    """A keep-alive HTTP/1.1 server answering every POST with one fixed chat completion (asyncio, stdlib)."""

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            while True:
                head_end = self.buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                head = self.buf[:head_end].lower()
                i = head.find(b"content-length:")
                length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
                total = head_end + 4 + length
                if len(self.buf) < total:
                    return
                self.buf = self.buf[total:]
                self.t.write(RESPONSE)

    async def main():
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", 0)
        port_holder.append(server.sockets[0].getsockname()[1])
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict, *args: str) -> str:
    """Run a promptproxy CLI command and return its stdout."""
    out = subprocess.run([sys.executable, "-m", "promptproxy.cli", *args], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def load(url: str, key: str, total: int, concurrency: int, model: str) -> list[float]:
    """Closed-loop load: `concurrency` threads, one keep-alive session each; returns latencies in ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))
    payload = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def worker():
        session = requests.Session()
        mine = []
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            t0 = time.perf_counter()
            resp = session.post(url, data=payload, headers=headers)
            mine.append((time.perf_counter() - t0) * 1000)
            if resp.status_code != 200:
                raise SystemExit(f"unexpected {resp.status_code}: {resp.text[:200]}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def pct(values: list[float], p: float) -> float:
    """Exact percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1)]


def main() -> None:
    """Set up a gateway on a fresh SQLite instance, warm it, measure, print one line of figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--prompt", action="store_true", help="use model:prompt (stored prompt injection)")
    ap.add_argument("--py-spy", dest="pyspy", help="record a py-spy profile to this file (.svg or .json)")
    ap.add_argument("--gil", action="store_true", help="py-spy: sample only the thread holding the GIL")
    ap.add_argument("--threads", type=int, default=64, help="waitress threads")
    args = ap.parse_args()

    holder: list[int] = []
    ready = threading.Event()
    threading.Thread(target=fast_upstream, args=(holder, ready), daemon=True).start()
    ready.wait(5)
    up = f"http://127.0.0.1:{holder[0]}/v1"

    tmp = tempfile.mkdtemp(prefix="pp-profile-")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTPROXY_INSTANCE_PATH": tmp,
           "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "1"}
    cli(env, "db", "upgrade")
    cli(env, "provider", "create", "mock", "--kind", "openai", "--base-url", up, "--api-key", "sk-mock-0000")
    cli(env, "model", "create", "gpt-4o-mini", "--provider", "mock", "--upstream-model", "m")
    cli(env, "prompt", "create", "translator", "--text", "Translate the user's words into French.")
    cli(env, "user", "create", "bench", "--all-models", "--all-prompts")
    key = next(w for w in cli(env, "key", "create", "--user", "bench").split() if w.startswith("pp-"))

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "promptproxy.cli", "serve", "--port", str(port),
                               "--threads", str(args.threads)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "server.log", "w"))
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            requests.get(base + "/healthz", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    url = base + "/v1/chat/completions"
    model = "gpt-4o-mini:translator" if args.prompt else "gpt-4o-mini"
    try:
        load(url, key, 500, args.concurrency, model)  # warm-up: pools, caches, tiktoken
        spy = None
        if args.pyspy:
            fmt = "speedscope" if args.pyspy.endswith(".json") else "flamegraph"
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(server.pid),
                                    "--rate", "250", "--format", fmt, "--output", args.pyspy, "--nonblocking",
                                    *(["--gil"] if args.gil else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
        latencies = load(url, key, args.requests, args.concurrency, model)
        cpu1 = cpu_seconds(server.pid)
        wall, user, system = time.perf_counter() - t0, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        print(f"requests={args.requests} c={args.concurrency} prompt={args.prompt} rps={args.requests / wall:.0f} "
              f"p50={pct(latencies, 50):.2f}ms p99={pct(latencies, 99):.2f}ms "
              f"gateway_cpu_per_request={(user + system) / args.requests * 1000:.3f}ms "
              f"(user {user / args.requests * 1000:.3f} + sys {system / args.requests * 1000:.3f})", flush=True)
        # every request must be in the log once the writer flushes
        time.sleep(1.0)
    finally:
        server.terminate()
        server.wait(30)
    import sqlite3

    rows = sqlite3.connect(Path(tmp) / "promptproxy.db").execute("SELECT count(*) FROM request_logs").fetchone()[0]
    print(f"request_logs rows={rows} (expected {args.requests + 500})")


if __name__ == "__main__":
    main()
