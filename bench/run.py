"""Benchmark PromptProxy against a mock upstream: direct figures first, then through the gateway.

Starts the mock upstream(s), measures them directly, sets up a throwaway PromptProxy on SQLite
with the CLI (provider, model, prompt, user, key), starts `promptproxy serve` and measures the
same load through it with auth, a stored prompt and the request log on. Prints one markdown
table with each target and writes the figures as JSON to bench/results/. Loopback only;
everything it starts is ended on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ab
import load
import procs
import report
import routing

HERE = Path(__file__).resolve().parent
PROMPT_MARKER = "BENCH-PROMPT-7f3a"
USER_MESSAGE = "Say hello in five words."


@dataclass(frozen=True)
class Profile:
    """Durations and sizes of one bench run."""

    name: str
    s1_seconds: float
    s2_seconds: float
    s3_seconds: float
    warmup: float
    s4_streams: int
    s4_chunks: int  # streams last about s4_chunks * s4_gap_ms
    s4_gap_ms: float
    s3_first_delay_ms: float = 20.0
    s3_gap_ms: float = 10.0
    s3_chunks: int = 30
    ab_rounds: int = 5  # chat vs Responses, interleaved: rounds, and seconds per leg and variant
    ab_seconds: float = 1.5


FULL = Profile(
    "full",
    s1_seconds=10,
    s2_seconds=15,
    s3_seconds=10,
    warmup=2,
    s4_streams=500,
    s4_chunks=100,
    s4_gap_ms=100,
)
QUICK = Profile(
    "quick",
    s1_seconds=2,
    s2_seconds=3,
    s3_seconds=2,
    warmup=0.5,
    s4_streams=100,
    s4_chunks=20,
    s4_gap_ms=100,
    ab_rounds=2,
    ab_seconds=0.6,
)


def chat_body(model: str, stream: bool) -> bytes:
    """The request every scenario sends; only the model name differs between direct and gateway."""
    body: dict = {"model": model, "messages": [{"role": "user", "content": USER_MESSAGE}], "max_tokens": 64}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body).encode()


def responses_body(model: str, stream: bool, store: bool) -> bytes:
    """The same user message and output limit as chat_body, as a Responses request."""
    body: dict = {"model": model, "input": [{"role": "user", "content": USER_MESSAGE}], "max_output_tokens": 64}
    if not store:
        body["store"] = False  # the default, true, writes one stored_responses row per call
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def measure(target: load.Target, concurrency: int, label: str, **kwargs) -> dict:
    """Run one load and print a one-line progress note."""
    result = load.drive(target, concurrency, **kwargs)
    summary = result.summary()
    line = f"  {label:<34} c={concurrency:<4} ok={summary['ok']:<6} rps={summary['rps']:<8}"
    if result.stream:
        line += f" ttfc p50={summary['ttfc_ms'].get('p50')} ms spread p50={summary['spread_ms'].get('p50')} ms"
    else:
        line += f" p50={summary['latency_ms'].get('p50')} ms p99={summary['latency_ms'].get('p99')} ms"
    if summary["errors"]:
        line += f" errors={summary['errors']}"
    print(line, flush=True)
    return summary


class Bench:
    """One bench run: child processes, settings and the figures gathered so far."""

    def __init__(self, args: argparse.Namespace, children: procs.Children, workdir: Path) -> None:
        self.args = args
        self.profile = QUICK if args.quick else FULL
        self.children = children
        self.workdir = workdir
        self.results: dict = {"profile": self.profile.__dict__, "env": procs.machine()}
        self.fast_port = self.long_port = self.gateway_port = 0
        self.fast_mock = self.long_mock = self.gateway = None
        self.key = ""
        self.gateway_requests = 0  # every request sent through the gateway, to check the log and prompt
        self.stored_expected = 0  # Responses calls with store: true, each one stored_responses row
        self.direct_after_gateway = 0  # requests straight at the fast mock once the gateway checks began
        self.base_env = dict(os.environ)  # bench/compare.py points PYTHONPATH at another checkout

    # -- mock upstreams -------------------------------------------------------------------------

    def start_mocks(self) -> None:
        """A mock for S1-S3 and a slow-streaming one for S4, each its own process."""
        p = self.profile
        self.fast_port, self.long_port = procs.free_port(), procs.free_port()
        common = [sys.executable, str(HERE / "mock_upstream.py"), "--marker", PROMPT_MARKER]
        self.fast_mock = self.children.start(
            [
                *common,
                "--port",
                str(self.fast_port),
                "--first-delay-ms",
                str(p.s3_first_delay_ms),
                "--gap-ms",
                str(p.s3_gap_ms),
                "--chunks",
                str(p.s3_chunks),
            ],
            self.workdir / "mock-fast.log",
        )
        self.long_mock = self.children.start(
            [
                *common,
                "--port",
                str(self.long_port),
                "--first-delay-ms",
                "0",
                "--gap-ms",
                str(p.s4_gap_ms),
                "--chunks",
                str(p.s4_chunks),
            ],
            self.workdir / "mock-long.log",
        )
        procs.wait_for_port(self.fast_port, self.fast_mock, 10)
        procs.wait_for_port(self.long_port, self.long_mock, 10)

    def direct(self, stream: bool) -> load.Target:
        url = f"http://127.0.0.1:{self.fast_port}/v1/chat/completions"
        return load.Target.build(url, chat_body("mock-chat", stream), stream=stream)

    def through(self, stream: bool, model: str = "bench-chat", api: str = "chat") -> load.Target:
        """Through the gateway: chat, or Responses (api "responses" with store: false, "responses_store")."""
        headers = {"Authorization": f"Bearer {self.key}"}
        if api == "chat":
            url = f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions"
            return load.Target.build(url, chat_body(f"{model}:bench", stream), headers, stream=stream)
        url = f"http://127.0.0.1:{self.gateway_port}/v1/responses"
        body = responses_body(f"{model}:bench", stream, store=api == "responses_store")
        # A Responses stream ends with its response.completed event; it has no [DONE].
        return load.Target.build(url, body, headers, stream=stream, end=b"event: response.completed")

    def count_gateway(self, api: str, completed: int) -> None:
        """Requests sent through the gateway, for the checks after the run."""
        self.gateway_requests += completed
        if api == "responses_store":
            self.stored_expected += completed

    def run_direct(self) -> None:
        """The mock's own capacity and every direct baseline."""
        p, r = self.profile, self.results
        print("Direct against the mock upstream:", flush=True)
        cpu0 = procs.cpu_seconds(self.fast_mock.pid)
        r["mock_capacity"] = measure(
            self.direct(False), 32, "mock capacity (S2 direct)", duration=p.s2_seconds, warmup=p.warmup
        )
        cap = r["mock_capacity"]
        mock_cpu = procs.cpu_seconds(self.fast_mock.pid) - cpu0
        cap["mock_cpu_frac"] = round(mock_cpu / cap["elapsed_s"], 3)
        # CPU per request holds even when other work steals the cores; 1 / it is one core's capacity.
        cap["mock_cpu_us_per_request"] = round(mock_cpu * 1e6 / max(cap["completed_incl_warmup"], 1), 1)
        cap["driver_cpu_us_per_request"] = round(cap["driver_cpu_s"] * 1e6 / max(cap["completed_incl_warmup"], 1), 1)
        r["s1"] = {"direct": measure(self.direct(False), 1, "S1 latency", duration=p.s1_seconds, warmup=p.warmup)}
        r["s2"] = {
            "c32": {"direct": r["mock_capacity"]},
            "c128": {
                "direct": measure(self.direct(False), 128, "S2 throughput", duration=p.s2_seconds, warmup=p.warmup)
            },
        }
        r["s3"] = {
            f"c{c}": {"direct": measure(self.direct(True), c, "S3 streaming", duration=p.s3_seconds, warmup=p.warmup)}
            for c in (1, 64)
        }
        url = f"http://127.0.0.1:{self.long_port}/v1/chat/completions"
        r["s4_direct"] = self.run_s4(load.Target.build(url, chat_body("mock-long", True), stream=True), None)

    # -- gateway --------------------------------------------------------------------------------

    def cli(self, *argv: str) -> str:
        """Run one promptproxy CLI command in the temp instance; its stdout."""
        done = subprocess.run(
            [*self.args.promptproxy.split(), *argv],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"promptproxy {' '.join(argv[:2])} failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        return done.stdout

    def setup_gateway(self) -> None:
        """A fresh SQLite instance: providers, models, prompt, user with all grants, and a key."""
        db_path = self.workdir / "pp.db"
        self.gateway_port = procs.free_port()
        self.env = self.base_env | {
            "PROMPTPROXY_DATABASE_URL": self.args.database_url or f"sqlite:///{db_path}",
            **({"PROMPTPROXY_REDIS_URL": self.args.redis_url} if self.args.redis_url else {}),
            "PROMPTPROXY_SECRET_KEY": secrets.token_urlsafe(32),
            "PROMPTPROXY_ENCRYPTION_KEY": secrets.token_urlsafe(32),
            "PROMPTPROXY_ALLOW_PRIVATE_UPSTREAMS": "1",
        }
        t0 = time.perf_counter()
        self.cli("db", "upgrade")
        for name, port in (("mock-fast", self.fast_port), ("mock-long", self.long_port)):
            self.cli(
                "provider",
                "create",
                name,
                "--kind",
                "openai",
                "--base-url",
                f"http://127.0.0.1:{port}/v1",
                "--api-key",
                "sk-bench-mock",
            )
        self.cli(
            "model",
            "create",
            "bench-chat",
            "--provider",
            "mock-fast",
            "--upstream-model",
            "mock-chat",
            "--kind",
            "chat",
        )
        self.cli(
            "model",
            "create",
            "bench-long",
            "--provider",
            "mock-long",
            "--upstream-model",
            "mock-long",
            "--kind",
            "chat",
        )
        self.cli(
            "prompt",
            "create",
            "bench",
            "--text",
            f"{PROMPT_MARKER} You are a terse assistant.",
            "--mode",
            "prepend",
        )
        routing.setup(self)
        self.cli("user", "create", "bench", "--email", "bench@example.com", "--all-models", "--all-prompts")
        lines = self.cli("key", "create", "--user", "bench", "--name", "bench").strip().splitlines()
        self.key = lines[-1].strip() if lines else ""
        if not self.key or " " in self.key:
            raise RuntimeError(f"could not read the new key from `key create` output: {lines[-3:]!r}")
        self.results["setup_s"] = round(time.perf_counter() - t0, 2)
        if not self.args.database_url:  # the checks count log rows in the SQLite file
            self.results["db_path"] = str(db_path)
        self.results["database"] = "postgresql" if self.args.database_url else "sqlite"
        self.results["redis"] = bool(self.args.redis_url)

    def start_gateway(self) -> None:
        """`promptproxy serve` on a free loopback port; S5 reads its RSS once it listens."""
        argv = [
            *self.args.promptproxy.split(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.gateway_port),
            *(["--threads", str(self.args.threads)] if self.args.threads else []),
            *(["--workers", str(self.args.workers)] if getattr(self.args, "workers", None) else []),
        ]
        self.gateway = self.children.start(argv, self.workdir / "gateway.log", env=self.env)
        t0 = time.perf_counter()
        procs.wait_for_port(self.gateway_port, self.gateway, 60)
        startup = time.perf_counter() - t0
        time.sleep(1.0)  # let start-up work (thread pools, log writer) settle before calling it idle
        pid = self.gateway.pid
        self.results["s5"] = {
            "startup_s": round(startup, 2),
            "idle_rss_mb": round(procs.status_kb(pid, "VmRSS") / 1024, 1),
            "threads_idle": procs.threads(pid),
            "processes": len(procs.tree(pid)),
        }
        self.results["mock_stats_before_gateway"] = self.mock_stats()
        self.check_gateway()
        self.results["s5"]["rss_after_first_requests_mb"] = round(procs.status_kb(pid, "VmRSS") / 1024, 1)

    def check_gateway(self) -> None:
        """One request of each kind must succeed before any figure is worth taking."""
        for api in ("chat", *([] if self.args.no_responses else ["responses", "responses_store"])):
            for stream in (False, True):
                result = load.drive(self.through(stream, api=api), 1, count=3, timeout=30)
                self.count_gateway(api, result.completed)
                bad = [s for s in result.samples if not s.ok]
                if bad:
                    raise RuntimeError(
                        f"gateway check failed ({api}, stream={stream}): {bad[0]}; see {self.workdir / 'gateway.log'}"
                    )

    def run_gateway(self) -> None:
        """S1-S4 through the gateway, with its CPU and memory read from /proc."""
        p, r, pid = self.profile, self.results, self.gateway.pid
        print(f"Through the gateway (pid {pid}, threads {self.args.threads or 'default'}, "
              f"workers {getattr(self.args, 'workers', None) or 'default'}):", flush=True)

        def through(stream: bool, c: int, label: str, seconds: float) -> dict:
            cpu0 = procs.cpu_seconds(pid)
            summary = measure(self.through(stream), c, label, duration=seconds, warmup=p.warmup)
            summary["gateway_cpu_s"] = round(procs.cpu_seconds(pid) - cpu0, 3)
            summary["gateway_cpu_frac"] = round(summary["gateway_cpu_s"] / summary["elapsed_s"], 3)
            self.gateway_requests += summary["completed_incl_warmup"]
            self.gateway_alive(f"{label} c={c}")
            return summary

        r["s1"]["gateway"] = through(False, 1, "S1 latency", p.s1_seconds)
        for c in (32, 128):
            r["s2"][f"c{c}"]["gateway"] = through(False, c, "S2 throughput", p.s2_seconds)
        runs = [r["s2"][f"c{c}"]["gateway"] for c in (32, 128)]
        cpu, completed = sum(s["gateway_cpu_s"] for s in runs), sum(s["completed_incl_warmup"] for s in runs)
        r["s2"] |= {
            "gateway_cpu_s": round(cpu, 3),
            "requests": completed,
            "cpu_ms_per_request": round(cpu * 1000 / completed, 3) if completed else None,
        }
        for c in (1, 64):
            r["s3"][f"c{c}"]["gateway"] = through(True, c, "S3 streaming", p.s3_seconds)
        r["s4"] = self.run_s4(self.through(True, "bench-long"), pid)
        self.gateway_alive("S4")
        self.gateway_requests += r["s4"]["completed_incl_warmup"]
        if not self.args.no_responses:
            r["ab"] = ab.run(self, p.ab_rounds, p.ab_seconds)
        if not self.args.no_routing:
            r["routing"] = routing.run(self, p.ab_rounds, p.ab_seconds)

    def gateway_alive(self, scenario: str) -> None:
        """Stop with a clear message if the gateway process died (its log tail is printed)."""
        if self.gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited with code {self.gateway.returncode} during {scenario}")

    def run_s4(self, target: load.Target, pid: int | None) -> dict:
        """N long streams at once; with a pid, its RSS and threads are sampled every 100 ms."""
        p = self.profile
        peak = {"rss_kb": 0, "threads": 0, "cpu0": 0.0}

        async def sample(stop: asyncio.Event) -> None:
            while pid is not None and not stop.is_set():
                peak["rss_kb"] = max(peak["rss_kb"], procs.status_kb(pid, "VmRSS"))
                peak["pss_kb"] = max(peak.get("pss_kb", 0), procs.pss_kb(pid))
                peak["threads"] = max(peak["threads"], procs.threads(pid))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)

        async def both() -> load.Result:
            peak["cpu0"] = procs.cpu_seconds(pid) if pid is not None else 0.0
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(stop))
            try:
                timeout = p.s4_chunks * p.s4_gap_ms / 1000 + 60
                return await load.run(target, p.s4_streams, count=p.s4_streams, timeout=timeout)
            finally:
                stop.set()
                await sampler

        summary = asyncio.run(both()).summary()
        summary["streams"] = p.s4_streams
        line = f"  {'S4 long streams':<34} c={p.s4_streams:<4} ok={summary['ok']:<6} "
        line += f"ttfc p99={summary['ttfc_ms'].get('p99')} ms"
        if pid is not None:
            summary |= {
                "peak_rss_mb": round(peak["rss_kb"] / 1024, 1),
                "peak_pss_mb": round(peak.get("pss_kb", 0) / 1024, 1),
                "vmhwm_mb": round(procs.status_kb(pid, "VmHWM") / 1024, 1),
                "peak_threads": peak["threads"],
                "gateway_cpu_frac": round((procs.cpu_seconds(pid) - peak["cpu0"]) / summary["elapsed_s"], 3),
            }
            line += f" peak RSS={summary['peak_rss_mb']} MB gateway CPU={summary['gateway_cpu_frac']:.0%}"
        if summary["errors"]:
            line += f" errors={summary['errors']}"
        print(line, flush=True)
        return summary

    def mock_stats(self) -> dict:
        """Both mocks' chat requests and stored-prompt sightings, summed."""
        total = {"chat_requests": 0, "marker_seen": 0}
        for port in (self.fast_port, self.long_port):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:  # noqa: S310
                stats = json.loads(resp.read())
            total["chat_requests"] += stats["by_path"].get("/v1/chat/completions", 0)
            total["marker_seen"] += stats["marker_seen"]
        return total

    def checks(self) -> None:
        """Evidence that every gateway request carried the stored prompt upstream and was logged."""
        after = self.mock_stats()
        before = self.results.get("mock_stats_before_gateway", {})
        checks = {
            "gateway_requests_sent": self.gateway_requests,
            "upstream_requests": after["chat_requests"] - before.get("chat_requests", 0) - self.direct_after_gateway,
            "upstream_with_prompt": after["marker_seen"] - before.get("marker_seen", 0),
            "cache_hits": getattr(self, "cache_hits", 0),  # gateway requests answered without the upstream
        }
        db_path = self.results.get("db_path")
        if db_path:
            time.sleep(1.0)  # the log writer flushes in the background
            with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db_path)) as conn:
                tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                table = next((t for t in tables if "request_log" in t), None)
                if table:
                    checks["request_log_table"] = table
                    sql = f'SELECT count(*) FROM "{table}"'  # noqa: S608 - name read from sqlite_master
                    checks["request_log_rows"] = conn.execute(sql).fetchone()[0]
                if "stored_responses" in tables:
                    checks["stored_responses_expected"] = self.stored_expected
                    sql = "SELECT count(*) FROM stored_responses"
                    checks["stored_responses_rows"] = conn.execute(sql).fetchone()[0]
        self.results["checks"] = checks


def versions() -> dict:
    """Versions of what serves the requests, from the running interpreter's environment."""
    out = {}
    for dist in ("promptproxy", "flask", "waitress", "sqlalchemy", "requests"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def default_cli() -> str:
    """The console script next to this interpreter, else `python -m promptproxy.cli`."""
    script = Path(sys.executable).parent / "promptproxy"
    return str(script) if script.exists() else f"{sys.executable} -m promptproxy.cli"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (about 70 s)")
    parser.add_argument("--direct-only", action="store_true", help="measure the mock only, no gateway")
    parser.add_argument("--no-responses", action="store_true", help="skip the chat vs Responses A/B")
    parser.add_argument("--no-routing", action="store_true", help="skip the deployments and cache scenarios")
    parser.add_argument("--threads", type=int, default=600, help="waitress threads per worker (0: serve's default)")
    parser.add_argument("--workers", default=None, help="`serve --workers` (default: serve's own default, auto)")
    parser.add_argument("--promptproxy", default=default_cli(), help="command that runs the CLI")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON results")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp instance and logs")
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database instead of SQLite")
    parser.add_argument("--redis-url", default=None, help="PROMPTPROXY_REDIS_URL for the gateway (limits store)")
    return parser


def _raise_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)  # so the finally blocks below end the children
    workdir = Path(tempfile.mkdtemp(prefix="promptproxy-bench-"))
    status = 1
    with procs.Children() as children:
        bench = Bench(args, children, workdir)
        bench.results["versions"] = versions()
        bench.results["gateway_cli"] = args.promptproxy
        print(report.environment(bench.results), flush=True)
        try:
            bench.start_mocks()
            bench.run_direct()
            if not args.direct_only:
                bench.setup_gateway()
                bench.start_gateway()
                bench.run_gateway()
                bench.checks()
            status = 0
        except Exception as exc:  # print what was measured, then the reason
            bench.results["error"] = f"{type(exc).__name__}: {exc}"
            log = workdir / "gateway.log"
            if log.exists():
                bench.results["gateway_log_tail"] = log.read_text(errors="replace")[-3000:]
        finally:
            bench.results["load_average_at_end"] = procs.load_average()
            children.stop_all()  # before printing, so a slow report cannot leave them running
            print()
            print(report.table(bench.results))
            if bench.results.get("ab"):
                print("\n" + ab.table(bench.results))
            path = report.save(bench.results, args.out)
            print(f"\nResults written to {path}")
            if "error" in bench.results:
                print(f"\nERROR: {bench.results['error']}", file=sys.stderr)
                if bench.results.get("gateway_log_tail"):
                    print("--- gateway log tail ---\n" + bench.results["gateway_log_tail"], file=sys.stderr)
            if args.keep_tmp or "error" in bench.results:
                print(f"Temp instance and logs kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
