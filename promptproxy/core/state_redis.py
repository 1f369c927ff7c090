"""The shared state of several instances: Redis, through one client per process (imported only when configured).

Keys are `<REDIS_PREFIX>:state:h:<key>` for hashes and `<REDIS_PREFIX>:state:c:<key>` for counters, so a key may hold
both as in the other stores. Hash fields that are not numbers are stored as `s:<text>`, so "12" read back stays a
string. The `limits` windows (`<prefix>:limits:*`), the limiter's slots and the response cache use the same client.
"""
from __future__ import annotations

import math

import redis
from limits.storage import RedisStorage, Storage
from redis.exceptions import RedisError

TIMEOUT = 1.0  # seconds to connect and to wait for an answer: a stuck Redis must not hold a request for long
STRING = "s:"
# Add to a counter; a new one gets its expiry (PTTL -1: no expiry yet), an old one keeps it.
COUNT = """
local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""
# Check and take in one script: Redis runs a script alone, so no other client takes in between.
TAKE = """
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


def _encode(value) -> str:
    """A hash field for Redis: numbers as their repr (HINCRBYFLOAT adds to them), other values tagged."""
    return repr(float(value)) if isinstance(value, int | float) else STRING + str(value)


def _decode(raw: bytes) -> float | str:
    text = raw.decode()
    return text[len(STRING):] if text.startswith(STRING) else float(text)


def _ms(ttl: float) -> int:
    """A TTL in whole milliseconds, at least 1 (PEXPIRE refuses 0)."""
    return max(math.ceil(ttl * 1000), 1)


class ClientRedisStorage(RedisStorage):
    """The `limits` RedisStorage on an existing client: its constructor would otherwise make a client of its own."""

    def __init__(self, client: redis.Redis, key_prefix: str):
        Storage.__init__(self, wrap_exceptions=True)
        self.key_prefix = key_prefix
        self.target_server = "redis"
        self.dependency = redis
        self.storage = client
        self.initialize_storage("")


class RedisState:
    """State in Redis: hashes as Redis hashes, counters as strings with PEXPIRE, `take` as one Lua script."""

    kind = "redis"
    errors: tuple = (RedisError, OSError)

    def __init__(self, url: str, prefix: str = "promptproxy"):
        self.client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
        self.prefix = prefix
        self._count = self.client.register_script(COUNT)
        self._take = self.client.register_script(TAKE)
        self._limits = None

    def _h(self, key: str) -> str:
        return f"{self.prefix}:state:h:{key}"

    def _c(self, key: str) -> str:
        return f"{self.prefix}:state:c:{key}"

    def read(self, keys: list[str]) -> list[dict]:
        """As State.read: one round trip for all keys."""
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self._h(key))
        return [{name.decode(): _decode(raw) for name, raw in found.items()} for found in pipe.execute()]

    def add(self, key: str, name: str, amount: float = 1) -> float:
        """As State.add."""
        return float(self.client.hincrbyfloat(self._h(key), name, amount))

    def put(self, key: str, values: dict) -> None:
        """As State.put."""
        if values:
            self.client.hset(self._h(key), mapping={str(k): _encode(v) for k, v in values.items()})

    def drop(self, key: str) -> None:
        """As State.drop."""
        self.client.delete(self._h(key), self._c(key))

    def count(self, key: str, amount: float, ttl: float) -> float:
        """As State.count (Redis expires the counter)."""
        return float(self._count([self._c(key)], [repr(float(amount)), _ms(ttl)]))

    def counts(self, keys: list[str]) -> list[float]:
        """As State.counts."""
        if not keys:
            return []
        return [float(raw) if raw is not None else 0.0 for raw in self.client.mget([self._c(k) for k in keys])]

    def take(self, key: str, limit: float, amount: float, ttl: float) -> bool:
        """As State.take."""
        limit = limit if math.isfinite(limit) else 1e308  # Lua's tonumber does not read "inf"
        return bool(self._take([self._c(key)], [repr(float(limit)), repr(float(amount)), _ms(ttl)]))

    def limits_storage(self) -> ClientRedisStorage:
        """As State.limits_storage: the `limits` windows under `<prefix>:limits`, on this client."""
        if self._limits is None:
            self._limits = ClientRedisStorage(self.client, f"{self.prefix}:limits")
        return self._limits
