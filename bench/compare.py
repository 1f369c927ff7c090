"""Before/after in one run: a git ref against the working tree, same scenarios, back to back.

    python bench/compare.py --ref aa14937 [--quick] [--rounds N] [--seconds S]
    make bench-compare REF=aa14937 [BENCH_ARGS=--quick]

Checks REF out into a temporary git worktree (removed on exit) and runs its package from there with this venv
(PYTHONPATH points at the checkout: the package is importable from its tree). Each side gets its own throwaway
SQLite instance (as bench/run.py: auth, stored prompt, request log on) and its own `promptproxy serve` with
serve's defaults; both share one mock upstream. Scenarios, non-streaming: a proxied chat call and an exact-cache
hit (a model with a cache TTL, filled once), each at c=1 and c=32. Every round runs every scenario on both sides,
the side order alternating, so both see the same machine; figures are medians over rounds with the spread
(min–max). CPU per request is the utime+stime of the gateway's processes (supervisor and workers) over a leg,
read 0.3 s after it ended (the log writers' flush belongs to it), divided by the requests it served.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ab
import load
import procs
import report
import run

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
# (label, model, concurrency): the proxied call reaches the mock; the hit is answered from the cache
SCENARIOS = (("proxied c=1", "bench-chat", 1), ("proxied c=32", "bench-chat", 32),
             ("cache hit c=1", "bench-cached", 1), ("cache hit c=32", "bench-cached", 32))
# -P: no current directory on sys.path, so the repository root (the gateway's cwd) cannot shadow PYTHONPATH
PYTHON = (sys.executable, "-P")
METRICS = (("req/s", "rps"), ("p50 ms", "p50"), ("p99 ms", "p99"), ("CPU ms/req", "cpu_ms"))


class Side:
    """One version of the gateway: its source tree, instance and running `serve`."""

    def __init__(self, name: str, label: str, tree: Path, args: argparse.Namespace, children: procs.Children,
                 workdir: Path) -> None:
        workdir.mkdir()
        self.name, self.label, self.tree = name, label, tree
        self.bench = run.Bench(args, children, workdir)
        self.bench.base_env = os.environ | {"PYTHONPATH": str(tree)}
        self.rows: dict[str, list[dict]] = {label: [] for label, _, _ in SCENARIOS}
        self.sent = 0

    def start(self, fast_port: int, long_port: int) -> None:
        """Set up the instance with the side's own CLI, start it and fill the cache with one miss."""
        self.bench.fast_port, self.bench.long_port = fast_port, long_port
        # From the repository root, where the gateway is started: without -P its cwd would come first.
        where = subprocess.run([*PYTHON, "-c", "import promptproxy; print(promptproxy.__file__)"],
                               env=self.bench.base_env, cwd=TREE, capture_output=True, text=True,
                               check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(self.tree.resolve()):
            raise RuntimeError(f"{self.name}: promptproxy imports from {where}, not from {self.tree}")
        self.bench.setup_gateway()
        self.bench.start_gateway()
        filled = load.drive(self.bench.through(False, "bench-cached"), 1, count=1, timeout=30)
        self.sent += self.bench.gateway_requests + filled.completed
        if not filled.samples or not filled.samples[0].ok:
            raise RuntimeError(f"{self.name}: the cache fill failed; see {self.bench.workdir / 'gateway.log'}")

    def leg(self, label: str, model: str, concurrency: int, seconds: float, warmup: float) -> dict:
        """One scenario once: req/s, p50/p99 and CPU per request of every gateway process."""
        pid = self.bench.gateway.pid
        cpu0 = procs.cpu_seconds(pid)
        summary = load.drive(self.bench.through(False, model), concurrency, duration=seconds, warmup=warmup)\
            .summary()
        time.sleep(ab.SETTLE_S)
        cpu = procs.cpu_seconds(pid) - cpu0
        self.sent += summary["completed_incl_warmup"]
        self.bench.gateway_alive(f"{self.name} {label}")
        row = {"rps": summary["rps"], "p50": summary["latency_ms"].get("p50"),
               "p99": summary["latency_ms"].get("p99"), "ok": summary["ok"], "errors": summary["errors"],
               "cpu_ms": round(cpu * 1000 / max(summary["completed_incl_warmup"], 1), 3)}
        self.rows[label].append(row)
        print(f"  {self.name:<6} {label:<15} rps={row['rps']:<8} p50={row['p50']} ms p99={row['p99']} ms "
              f"cpu={row['cpu_ms']} ms/req" + (f" errors={row['errors']}" if row["errors"] else ""), flush=True)
        return row

    def logged(self) -> str:
        """Request-log rows and cache hits among them, against the requests sent (each should have a row)."""
        time.sleep(0.5)  # the log writers flush in the background
        path = self.bench.workdir / "pp.db"
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(path)) as conn:
            rows, hits = conn.execute("SELECT count(*), sum(cache_hit) FROM request_logs").fetchone()
            return f"{self.name}: {rows} rows ({hits} cache hits) for {self.sent} requests"
        return f"{self.name}: log not readable"


@contextlib.contextmanager
def checkout(ref: str, folder: Path):
    """REF in a temporary detached worktree of this repository, removed on exit."""
    git = ["git", "-C", str(TREE)]
    sha = subprocess.run([*git, "rev-parse", "--short", ref], capture_output=True, text=True, check=True).stdout
    subprocess.run([*git, "worktree", "add", "--detach", "--quiet", str(folder), ref], check=True)
    try:
        yield sha.strip()
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=False)


def spread(values: list[float]) -> str:
    """median (min–max) of one metric over rounds."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    fmt = "{:,.0f}" if max(values) >= 100 else "{:.2f}"
    med = fmt.format(statistics.median(values))
    return med if len(values) == 1 else f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def change(before: list[float], after: list[float]) -> str:
    """after's median against before's, in percent."""
    if not before or not after or not statistics.median(before):
        return "n/a"
    return f"{(statistics.median(after) / statistics.median(before) - 1) * 100:+.0f} %"


def table(sides: list[Side]) -> str:
    """One markdown table: every scenario and metric, before and after, medians (min–max) over rounds."""
    before, after = sides
    lines = [f"| Scenario | Metric | before ({before.label}) | after ({after.label}) | Δ |", "|---|---|---|---|---|"]
    for label, _, _ in SCENARIOS:
        for name, key in METRICS:
            b = [r[key] for r in before.rows[label]]
            a = [r[key] for r in after.rows[label]]
            lines.append(f"| {label} | {name} | {spread(b)} | {spread(a)} | {change(b, a)} |")
    lines.append("")
    for side in sides:
        ratios = []
        for c in (1, 32):
            hit = statistics.median(r["cpu_ms"] for r in side.rows[f"cache hit c={c}"])
            proxied = statistics.median(r["cpu_ms"] for r in side.rows[f"proxied c={c}"])
            ratios.append(f"c={c} {hit / proxied:.2f}")
        lines.append(f"- {side.name}: cache hit CPU / proxied CPU (medians): {', '.join(ratios)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ref", required=True, help="git ref of the 'before' side (the working tree is 'after')")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1.5 s legs (about 2 minutes)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, --quick 3)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per leg (default 4, --quick 1.5)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp instances and logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (1.5 if args.quick else 4.0)
    # serve's defaults (threads, workers), SQLite; the Bench options compare does not vary
    bench_args = run.build_parser().parse_args(["--threads", "0", "--no-responses", "--no-routing",
                                                *(["--quick"] if args.quick else [])])
    bench_args.promptproxy = " ".join([*PYTHON, "-m", "promptproxy.cli"])  # the package on PYTHONPATH
    signal.signal(signal.SIGTERM, run._raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="promptproxy-bench-compare-"))
    t0 = time.perf_counter()
    with checkout(args.ref, workdir / "ref") as sha, procs.Children() as children:
        sides = [Side("before", f"{args.ref} {sha}" if sha != args.ref else sha, workdir / "ref", bench_args,
                      children, workdir / "before"),
                 Side("after", "working tree", TREE, bench_args, children, workdir / "after")]
        sides[0].bench.results["gateway_cli"] = f"{bench_args.promptproxy} (PYTHONPATH: each side's tree)"
        print(report.environment(sides[0].bench.results), flush=True)
        sides[0].bench.start_mocks()
        for side in sides:
            side.start(sides[0].bench.fast_port, sides[0].bench.long_port)
        print(f"{rounds} rounds of {seconds:g} s per scenario and side (+{ab.WARMUP_S:g} s warm-up):", flush=True)
        for n in range(rounds):
            for label, model, concurrency in SCENARIOS:
                for side in sides if n % 2 == 0 else sides[::-1]:
                    side.leg(label, model, concurrency, seconds, ab.WARMUP_S)
        logged = "; ".join(side.logged() for side in sides)
        load_end = procs.load_average()
        children.stop_all()
    print()
    print(table(sides))
    print(f"\nLoad average at start {sides[0].bench.results['env']['load_average_at_start']}, at end {load_end}; "
          f"{logged}; {time.perf_counter() - t0:.0f} s")
    if args.keep_tmp:
        print(f"Temp instances and logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
