"""Seed a database with many request-log rows (and their roll-ups), then time the dashboard's queries.

    python scripts/seed_logs.py                                  # 1,000,000 rows in a temporary SQLite file
    python scripts/seed_logs.py --database-url postgresql+psycopg://postgres@127.0.0.1/pp_ops --reset
    python scripts/seed_logs.py --database-url sqlite:////tmp/seed.db --skip-seed   # time an existing one

--reset wipes the target database first (PostgreSQL: DROP SCHEMA public CASCADE). Timings are the median of
five runs of the dashboard overview (series + totals + top users/models/prompts/keys) per range, from the
roll-ups and, for comparison, by scanning request_logs as before.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from promptproxy import create_app, rollups, stats  # noqa: E402
from promptproxy.extensions import db  # noqa: E402
from promptproxy.models import ApiKey, RequestLog, User, utcnow  # noqa: E402

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet", "llama3-8b", "embed-small", "mistral-7b"]
PROMPTS = [None, None, None, "translator", "summarizer", "support-bot", "sql-helper"]
STATUSES = [200] * 95 + [429, 429, 500, 502, 504]


def reset(url: str) -> None:
    """Empty the target database."""
    if url.startswith("postgresql"):
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
    elif url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def seed(app, rows: int, days: int, users: int, batch: int) -> float:
    """Insert users, keys and `rows` log rows spread over `days`, roll-ups included; returns seconds taken."""
    rnd = random.Random(42)
    started = time.perf_counter()
    with app.app_context():
        engine = db.engine
        with engine.begin() as conn:
            conn.execute(sa.insert(User.__table__), [
                {"name": f"user{i}", "email": f"user{i}@example.com", "role": "member", "active": True,
                 "all_models": True, "all_prompts": True, "session_version": 0, "created_at": utcnow()}
                for i in range(1, users + 1)])
            conn.execute(sa.insert(ApiKey.__table__), [
                {"user_id": 1 + i % users, "name": f"k{i}", "key_hash": uuid.uuid4().hex * 2, "prefix": "pp-seed",
                 "last4": f"{i:04d}"[-4:], "created_at": utcnow()} for i in range(users * 2)])
        now = utcnow()
        span = days * 86400
        aggregates: dict = {}
        done = 0
        while done < rows:
            chunk = []
            for i in range(done, min(rows, done + batch)):
                user = 1 + int(rnd.paretovariate(1.2)) % users
                status = rnd.choice(STATUSES)
                ok = status == 200
                tin, tout = rnd.randrange(20, 2000), rnd.randrange(1, 800) if ok else 0
                chunk.append({
                    "request_id": f"req_seed_{i:09d}", "created_at": now - timedelta(seconds=rnd.random() * span),
                    "user_id": user, "key_id": user * 2 - rnd.randrange(2), "model": rnd.choice(MODELS),
                    "prompt": rnd.choice(PROMPTS), "endpoint": "/v1/chat/completions", "inbound_format": "openai",
                    "stream": rnd.random() < 0.5, "status": status, "usage_estimated": False,
                    "input_tokens": tin if ok else None, "output_tokens": tout if ok else None,
                    "cost": (tin * 0.15 + tout * 0.6) / 1e6 if ok else None,
                    "latency_ms": rnd.lognormvariate(6.2, 0.8), "ttft_ms": rnd.lognormvariate(5, 0.5),
                })
            with engine.begin() as conn:
                conn.execute(sa.insert(RequestLog.__table__), chunk)
            rollups.aggregate(chunk, aggregates)
            done += len(chunk)
            print(f"\r  {done:,} rows", end="", flush=True)
        with engine.begin() as conn:
            rollups.upsert(conn, aggregates)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
        else:
            with engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
    print()
    return time.perf_counter() - started


def overview_page(name: str) -> None:
    """What the dashboard's overview page computes for one range."""
    since, until, bucket = stats.window(name)
    stats.overview(since, until, bucket)
    for dim in ("user", "model", "prompt", "key"):
        stats.top(dim, since, until)


def log_page() -> None:
    """The request-log page: the newest 50 rows of one user and the total count (db.paginate)."""
    query = sa.select(RequestLog).where(RequestLog.user_id == 3).order_by(RequestLog.id.desc())
    for q in (query, sa.select(RequestLog).order_by(RequestLog.id.desc())):
        page = db.paginate(q, page=1, per_page=50, error_out=False)
        assert len(page.items) <= 50 and page.total is not None


def timed(fn, *args, runs: int = 5) -> float:
    """Median milliseconds of `runs` calls (after one warm-up)."""
    fn(*args)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(*args)
        db.session.rollback()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def measure(app, raw: bool) -> None:
    """Print the timing table."""
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).select_from(RequestLog))
        rolled = db.session.scalar(sa.select(sa.func.count()).select_from(rollups.TABLE))
        print(f"{db.engine.dialect.name}: {count:,} request_logs rows, {rolled:,} roll-up rows")
        for name in stats.RANGES:
            line = f"  overview {name:>4}: {timed(overview_page, name):8.1f} ms (roll-ups)"
            if raw:
                original = stats._period
                stats._period = lambda *a: None
                try:
                    line += f"  {timed(overview_page, name, runs=1):9.1f} ms (scanning request_logs)"
                finally:
                    stats._period = original
            print(line, flush=True)
        print(f"  request log page (user filter + all, with counts): {timed(log_page):8.1f} ms", flush=True)


def main() -> None:
    """Seed (unless --skip-seed) and measure."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--reset", action="store_true", help="wipe the target database first")
    ap.add_argument("--skip-seed", action="store_true")
    ap.add_argument("--no-raw", action="store_true", help="skip the (slow) raw-scan comparison")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pp-seed-"))
    url = args.database_url or f"sqlite:///{tmp / 'seed.db'}"
    os.environ.setdefault("PROMPTPROXY_INSTANCE_PATH", str(tmp))
    if args.reset:
        reset(url)
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "seed-secret-key-0123456789abcdefghij",
                      "ENCRYPTION_KEY": "seed-encryption-key-0123456789abcdef"})
    if not args.skip_seed:
        from flask_migrate import upgrade

        with app.app_context():
            upgrade()
        print(f"seeding {args.rows:,} rows over {args.days} days into {app.config['DATABASE_URL']}")
        print(f"seeded in {seed(app, args.rows, args.days, args.users, args.batch):.1f} s")
    measure(app, raw=not args.no_raw)
    app.extensions["promptproxy"].close()


if __name__ == "__main__":
    main()
