"""Python function calls and CPU per proxied call, in process: a before/after figure a busy machine cannot blur.

CPU time per request moves by ±20 % on a machine shared with other work; the number of Python calls a request
makes does not move at all. Run it with each tree's interpreter against the same mock and compare:

    .venv/bin/python bench/calls.py                       # this tree
    /path/to/other/.venv/bin/python bench/calls.py        # the other tree (its own editable install)

Each scenario (whole chat, streamed chat with 16 chunks, cache hit) is warmed up, then counted with a profile
hook over 20 calls and timed with process_time over `-n` calls, through Flask's test client, on SQLite.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import procs

HERE = Path(__file__).resolve().parent
MESSAGES = [{"role": "user", "content": "hello there"}]


def gateway(port: int, tmp: Path):
    """An app on a fresh SQLite database with a mock provider, a plain model `m`, a cached model `c` and a key."""
    from flask_migrate import upgrade

    from promptproxy import create_app, manage
    from promptproxy.extensions import db

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp}/bench.db", "SECRET_KEY": "bench-" * 8,
                      "ENCRYPTION_KEY": "bench-encryption-key-0123456789abcdef", "ALLOW_PRIVATE_UPSTREAMS": True,
                      "CACHE_TTL": 60.0, "ACCESS_LOG": False})
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with app.app_context():
        upgrade()
        provider = manage.create_provider("bench", "mock", "openai", f"http://127.0.0.1:{port}/v1",
                                          api_key="sk-mock-0123456789")
        manage.create_model("bench", "m", provider, "mock-model", input_price=1.0, output_price=2.0)
        manage.create_model("bench", "c", provider, "mock-model", cache_ttl=600)
        user = manage.create_user("bench", "u", all_models=True)
        _, key = manage.create_key("bench", user)
        db.session.commit()
    logging.getLogger("promptproxy").setLevel(logging.WARNING)
    return app, {"Authorization": f"Bearer {key}"}


def scenarios(app, headers: dict) -> dict:
    """name -> a function making one call and checking its answer."""
    client = app.test_client()

    def whole(model: str = "m"):
        resp = client.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES}, headers=headers)
        assert resp.status_code == 200, resp.get_data()

    def stream():
        resp = client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True},
                           headers=headers)
        assert b"[DONE]" in resp.get_data()

    return {"whole": whole, "stream": stream, "cache_hit": lambda: whole("c")}


def calls_per_request(fn, count: int = 20) -> float:
    """Python-level function calls (profile 'call' events) per call of fn."""
    seen = [0]

    def hook(frame, event, arg):
        if event == "call":
            seen[0] += 1

    sys.setprofile(hook)
    try:
        for _ in range(count):
            fn()
    finally:
        sys.setprofile(None)
    return seen[0] / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="timed calls per scenario")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pp-calls-"))
    port = procs.free_port()
    with procs.Children() as children:
        mock = children.start([sys.executable, str(HERE / "mock_upstream.py"), "--port", str(port), "--chunks", "16"],
                               tmp / "mock.log")
        procs.wait_for_port(port, mock, 10)
        app, headers = gateway(port, tmp)
        out = {}
        for name, fn in scenarios(app, headers).items():
            for _ in range(50):
                fn()
            calls = calls_per_request(fn)
            started = time.process_time()
            for _ in range(args.n):
                fn()
            out[name] = {"python_calls": round(calls), "cpu_us": round((time.process_time() - started) / args.n * 1e6)}
        app.extensions["promptproxy"].close()
    print(json.dumps({"load_average": procs.load_average(), **out}))


if __name__ == "__main__":
    main()
