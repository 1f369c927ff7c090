"""Routing figures, interleaved: one deployment vs two, and exact-cache hits, at c=1 and c=32 (non-streamed).

The same interleaving as ab.py: each round runs every leg for every variant in turn, so the ratios hold on a
shared machine even when absolute figures move. `cached` answers every request after the first from the cache.
"""
from __future__ import annotations

import time

import ab
import load
import procs

VARIANTS = ("one", "two", "cached")
MODELS = {"one": "bench-chat", "two": "bench-two", "cached": "bench-cached"}
LEGS = (("c1", 1), ("c32", 32))
TOLERANCE = 0.05  # the bound: two deployments no more than 5 % slower than one


def setup(bench) -> None:
    """bench-two: the fast mock behind two providers (two pools, weights 1:1); bench-cached: a 1 h cache."""
    bench.cli("provider", "create", "mock-fast-2", "--kind", "openai", "--base-url",
              f"http://127.0.0.1:{bench.fast_port}/v1", "--api-key", "sk-bench-mock")
    bench.cli("model", "create", "bench-two", "--provider", "mock-fast", "--upstream-model", "mock-chat")
    bench.cli("model", "deploy", "bench-two", "--provider", "mock-fast-2", "--upstream-model", "mock-chat")
    bench.cli("model", "create", "bench-cached", "--provider", "mock-fast", "--upstream-model", "mock-chat",
              "--cache-ttl", "3600")


def run(bench, rounds: int, seconds: float) -> dict:
    """All rounds; per leg and variant the pooled summary with gateway CPU per request."""
    pid = bench.gateway.pid
    runs: dict[str, dict[str, list]] = {leg: {} for leg, _ in LEGS}
    cpu: dict[str, dict[str, float]] = {leg: {} for leg, _ in LEGS}
    load.drive(bench.through(False, MODELS["cached"]), 1, count=1, timeout=30)  # the one miss that fills it
    print(f"Routing, interleaved ({rounds} rounds of {seconds:g} s per leg and variant):", flush=True)
    for i in range(rounds):
        order = VARIANTS[i % 3:] + VARIANTS[:i % 3]
        for leg, concurrency in LEGS:
            for variant in order:
                cpu0 = procs.cpu_seconds(pid)
                result = load.drive(bench.through(False, MODELS[variant]), concurrency, duration=seconds,
                                    warmup=ab.WARMUP_S)
                time.sleep(ab.SETTLE_S)
                cpu[leg][variant] = cpu[leg].get(variant, 0.0) + procs.cpu_seconds(pid) - cpu0
                runs[leg].setdefault(variant, []).append(result)
                bench.count_gateway("chat", result.completed)
                if variant == "cached":  # answered by the gateway: no upstream request
                    bench.cache_hits = getattr(bench, "cache_hits", 0) + result.completed
        bench.gateway_alive(f"routing round {i + 1}")
    out: dict = {"rounds": rounds, "seconds": seconds, "legs": {}}
    for leg, by_variant in runs.items():
        out["legs"][leg] = {}
        for variant, results in by_variant.items():
            summary = ab.merge(results).summary()
            done = max(summary["completed_incl_warmup"], 1)
            summary["cpu_ms_per_request"] = round(cpu[leg][variant] * 1000 / done, 3)
            out["legs"][leg][variant] = summary
            print(f"  {leg:<4} {variant:<7} ok={summary['ok']:<6} rps={summary['rps']:<8} "
                  f"p50={summary['latency_ms'].get('p50')} ms cpu={summary['cpu_ms_per_request']} ms/req"
                  + (f" errors={summary['errors']}" if summary["errors"] else ""), flush=True)
    one, two = out["legs"]["c32"].get("one", {}), out["legs"]["c32"].get("two", {})
    if one.get("rps") and two.get("rps"):
        out["two_vs_one_rps"] = round(two["rps"] / one["rps"], 3)
        print(f"  two deployments / one, c=32 req/s: {out['two_vs_one_rps']} (bound {1 - TOLERANCE:.2f})")
    return out
