"""`serve --workers 1` against the default (`auto`: one worker per CPU) side by side, in one run.

    python bench/workers.py [--quick] [--variants 1,auto] [--rounds 2]

Starts the mocks once and one throwaway SQLite instance (auth, stored prompt, request log on, as bench/run.py),
then for each round and each variant in turn (the order alternates between rounds, so both see the same
conditions): starts `promptproxy serve` with no tuning flag but --workers, reads its idle memory, then S1 (c=1,
added latency against a direct baseline taken just before), S2 (c=32: req/s and CPU per request of the supervisor
and all workers) and S4 (N long streams at once: first-chunk p99, peak memory of all processes). Prints one
markdown table (medians over rounds) and writes the JSON next to bench/run.py's results.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import floor
import procs
import report
import run

TARGETS = {"s2_rps": 1200.0, "cpu_ms": 0.8, "s1_added_ms": 1.0, "s4_ttfc_p99_ms": 500.0, "s4_rss_mb": 300.0,
           "idle_rss_mb": 150.0}


def measure_variant(bench: run.Bench, workers: str) -> dict:
    """One gateway with `--workers workers`: idle memory, S1, S2 c=32, S4; the gateway is stopped after."""
    p = bench.profile
    bench.args.workers = workers
    bench.gateway_port = procs.free_port()
    before = bench.results.get("mock_stats_before_gateway")
    bench.start_gateway()
    if before:  # the checks compare with the mocks' counts before the first gateway, not the latest
        bench.results["mock_stats_before_gateway"] = before
    pid = bench.gateway.pid
    out = {"workers": workers, "processes": len(procs.tree(pid)),
           "idle_rss_mb": bench.results["s5"]["idle_rss_mb"], "idle_pss_mb": round(procs.pss_kb(pid) / 1024, 1)}
    print(f"--workers {workers}: {out['processes']} processes, idle RSS {out['idle_rss_mb']} MB "
          f"(PSS {out['idle_pss_mb']} MB)", flush=True)
    direct = run.measure(bench.direct(False), 1, "S1 direct", duration=p.s1_seconds, warmup=p.warmup)
    bench.direct_after_gateway += direct["completed_incl_warmup"]
    s1 = run.measure(bench.through(False), 1, "S1 gateway", duration=p.s1_seconds, warmup=p.warmup)
    out["s1_added_ms"] = round(s1["latency_ms"]["p50"] - direct["latency_ms"]["p50"], 3)
    cpu0 = procs.cpu_seconds(pid)
    s2 = run.measure(bench.through(False), 32, "S2 gateway", duration=p.s2_seconds, warmup=p.warmup)
    time.sleep(0.3)  # the log writers' flush belongs to this leg
    out["s2_rps"] = s2["rps"]
    out["cpu_ms"] = round((procs.cpu_seconds(pid) - cpu0) * 1000 / max(s2["completed_incl_warmup"], 1), 3)
    s4 = bench.run_s4(bench.through(True, "bench-long"), pid)
    out |= {"s4_ok": s4["ok"], "s4_streams": s4["streams"], "s4_ttfc_p50_ms": s4["ttfc_ms"].get("p50"),
            "s4_ttfc_p99_ms": s4["ttfc_ms"].get("p99"), "s4_rss_mb": s4["peak_rss_mb"], "s4_pss_mb": s4["peak_pss_mb"],
            "s4_errors": s4["errors"]}
    bench.gateway_requests += s1["completed_incl_warmup"] + s2["completed_incl_warmup"] + s4["completed_incl_warmup"]
    bench.children.stop(bench.gateway, grace=30)
    return out


def median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def table(results: dict) -> str:
    """Medians per variant, each figure next to its target (the target applies to the default)."""
    variants = results["variants"]
    rows = [("S2 c=32 throughput", "s2_rps", "≥ 1,200 req/s", lambda v: v >= TARGETS["s2_rps"]),
            ("CPU per request (S2, all processes)", "cpu_ms", "≤ 0.8 ms", lambda v: v <= TARGETS["cpu_ms"]),
            ("S1 added latency p50", "s1_added_ms", "≤ 1 ms", lambda v: v <= TARGETS["s1_added_ms"]),
            (f"S4 {results['profile']['s4_streams']} streams: first chunk p99", "s4_ttfc_p99_ms", "≤ 500 ms",
             lambda v: v <= TARGETS["s4_ttfc_p99_ms"]),
            ("S4 streams completed", "s4_ok", "all", lambda v: v == results["profile"]["s4_streams"]),
            ("S4 peak RSS, all processes (summed)", "s4_rss_mb", "≤ 300 MB", lambda v: v <= TARGETS["s4_rss_mb"]),
            ("S4 peak PSS, all processes", "s4_pss_mb", "", None),
            ("idle RSS, supervisor + workers (summed)", "idle_rss_mb", "≤ 150 MB",
             lambda v: v <= TARGETS["idle_rss_mb"]),
            ("idle PSS, supervisor + workers", "idle_pss_mb", "", None)]
    names = list(variants)
    head = "| Metric | " + " | ".join(f"--workers {n}" for n in names) + " | Target (default) | Result |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for label, key, target, check in rows:
        values = [median(variants[n], key) for n in names]
        result = "" if check is None or values[-1] is None else ("PASS" if check(values[-1]) else "FAIL")
        lines.append(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:,}" for v in values)
                     + f" | {target} | {result} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = run.build_parser()
    parser.description = __doc__.split("\n", 1)[0]
    parser.set_defaults(threads=0, no_responses=True)
    parser.add_argument("--variants", default="1,auto", help="comma-separated --workers values; the last is "
                        "the one the targets are judged on (default 1,auto)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, run._raise_exit)
    workdir = Path(tempfile.mkdtemp(prefix="promptproxy-bench-workers-"))
    variants = args.variants.split(",")
    with procs.Children() as children:
        bench = run.Bench(args, children, workdir)
        bench.results |= {"versions": run.versions(), "variants": {v: [] for v in variants}}
        print(report.environment(bench.results), flush=True)
        try:
            bench.start_mocks()
            bench.setup_gateway()
            mock_port = procs.free_port()  # its own mock: the checks count the bench mocks' requests
            mock = children.start([sys.executable, str(Path(floor.__file__).with_name("mock_upstream.py")),
                                   "--port", str(mock_port)], workdir / "floor-mock.log")
            procs.wait_for_port(mock_port, mock, 10)
            upstream = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
            bench.results["floor"] = []
            for n in range(args.rounds):
                for workers in variants if n % 2 == 0 else variants[::-1]:
                    bench.results["variants"][workers].append(measure_variant(bench, workers))
                # The machine's own speed, in the same run: Flask + one urllib3 upstream call, no gateway logic.
                bench.results["floor"].append(floor.measure("flask+urllib3", upstream, 32, bench.profile.s2_seconds,
                                                            children))
            bench.checks()
        finally:
            bench.results["load_average_at_end"] = procs.load_average()
            children.stop_all()
        print()
        print(table(bench.results))
        floors = bench.results["floor"]
        if floors:
            print(f"\nFloor on this machine (one process: waitress + Flask + one urllib3 upstream call, no gateway "
                  f"logic), S2 c=32: {median(floors, 'rps'):,} req/s, {median(floors, 'cpu_ms')} ms CPU per request")
        print(f"\nload average at start {bench.results['env']['load_average_at_start']}, "
              f"at end {bench.results['load_average_at_end']}; checks: {bench.results.get('checks')}")
        path = report.save(bench.results | {"kind": "workers"}, args.out)
        print(f"Results written to {path}")
        if not args.keep_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
