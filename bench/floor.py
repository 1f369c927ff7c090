"""The floor under the gateway: CPU per request of waitress alone, + Flask, + one upstream call with requests.

Each layer is served by `promptproxy serve`'s own waitress settings and driven like S2 (non-streaming, c=32),
so the figures show how much of the gateway's CPU per request the stack costs before any gateway logic.

    .venv/bin/python bench/floor.py [--concurrency 32] [--seconds 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import load
import procs

HERE = Path(__file__).resolve().parent
BODY = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}'
LAYERS = ("waitress", "flask", "flask+requests", "flask+urllib3")


def serve(layer: str, port: int, upstream: str) -> None:
    """Run one layer's app under PromptProxy's waitress options until killed."""
    sys.path.insert(0, str(HERE.parent))
    from waitress.server import create_server

    from promptproxy.server import GrowingDispatcher, waitress_options

    if layer == "waitress":
        def app(environ, start_response):
            environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
            return [BODY]
    else:
        from flask import Flask, Response, request

        app = Flask(__name__)
        session = pools = None
        if layer == "flask+requests":  # what the gateway used before it called urllib3 directly
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            session.trust_env = False
            session.mount("http://", HTTPAdapter(pool_maxsize=64, max_retries=0))
        elif layer == "flask+urllib3":  # the gateway's upstream client (promptproxy.transport.upstream.Upstreams)
            from types import SimpleNamespace

            from promptproxy.providers.base import UpstreamRequest
            from promptproxy.transport.upstream import Upstreams

            pools = Upstreams(pool_size=64)
            provider = SimpleNamespace(id=1, base_url=upstream, connect_timeout=5.0)

        @app.post("/v1/chat/completions")
        def chat():
            data = request.get_data()
            if session is not None:
                resp = session.post(upstream, data=data, headers={"Content-Type": "application/json"},
                                    timeout=(5, 30), stream=True)
            elif pools is not None:
                req = UpstreamRequest(url=upstream, headers={"Content-Type": "application/json"}, body=data)
                resp = pools.send(provider, req, 30.0)
            else:
                return Response(BODY, mimetype="application/json")
            out = resp.raw.read()
            resp.close()
            return Response(out, mimetype="application/json")

    import warnings

    warnings.filterwarnings("ignore", "send_bytes", DeprecationWarning)
    create_server(app, host="127.0.0.1", port=port, _dispatcher=GrowingDispatcher(64),
                  **waitress_options({"MAX_BODY_BYTES": 10 * 1024 * 1024}, 64)).run()


def measure(layer: str, upstream: str, concurrency: int, seconds: float, children: procs.Children) -> dict:
    """CPU per request and req/s of one layer."""
    port = procs.free_port()
    proc = children.start([sys.executable, __file__, "--serve", layer, "--port", str(port), "--upstream", upstream],
                          Path("/dev/null"))
    procs.wait_for_port(port, proc, 20)
    body = json.dumps({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}).encode()
    target = load.Target.build(f"http://127.0.0.1:{port}/v1/chat/completions", body)
    load.drive(target, concurrency, duration=1.5)  # warm-up
    cpu0 = procs.cpu_seconds(proc.pid)
    summary = load.drive(target, concurrency, duration=seconds).summary()
    cpu = procs.cpu_seconds(proc.pid) - cpu0
    children.stop(proc)
    per_request = round(cpu * 1000 / max(summary["completed_incl_warmup"], 1), 3)
    return {"layer": layer, "rps": summary["rps"], "cpu_ms": per_request, "p50_ms": summary["latency_ms"].get("p50")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--serve", choices=LAYERS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.upstream)
        return 0
    with procs.Children() as children:
        mock_port = procs.free_port()
        mock = children.start([sys.executable, str(HERE / "mock_upstream.py"), "--port", str(mock_port)],
                              Path("/dev/null"))
        procs.wait_for_port(mock_port, mock, 10)
        upstream = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
        print(f"| Layer (c={args.concurrency}) | req/s | CPU per request | p50 |\n|---|---|---|---|")
        for layer in LAYERS:
            r = measure(layer, upstream, args.concurrency, args.seconds, children)
            print(f"| {r['layer']} | {r['rps']:,.0f} | {r['cpu_ms']} ms | {r['p50_ms']} ms |", flush=True)
            time.sleep(0.5)
        children.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
