"""The send policy shared by every channel (email, X, the newsroom): attempts,
backoff with jitter, the error budget that pauses a step, and rate limits: in this
process (``RateLimiter``: a policy with no database, the local Maildir target), or
for the whole deployment (``SharedRateLimiter``: the ``Rates`` kept in the database,
taken in chunks)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from outreach.ports.outbox import BURST_SHARE, Limit, Rates


@dataclass(frozen=True)
class SendPolicy:
    max_attempts: int = 5
    backoff_base: float = 30.0  # seconds before the first retry; doubles each time
    backoff_cap: float = 3600.0
    error_budget: int = 25  # failures in a row (temporary or permanent) that pause a step
    same_reply: int = 5  # recipients in a row with the same permanent reply: the relay's, pause
    batch: int = 0  # deliveries claimed at a time; 0: 25 per connection, 50 to 500
    per_second: float = 50.0
    per_hour: int = 100_000


def backoff(attempt: int, policy: SendPolicy) -> timedelta:
    """Exponential backoff with jitter: about base, 2 base, 4 base ... up to the cap."""
    delay = min(policy.backoff_cap, policy.backoff_base * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=delay * random.uniform(0.75, 1.25))


class RateLimiter:
    """Messages per second (a token bucket holding ``BURST_SHARE`` of a second's worth)
    and per hour (a running count)."""

    def __init__(self, per_second: float, per_hour: int, sent_last_hour: int = 0) -> None:
        self.per_second = per_second
        self.per_hour = per_hour
        self.capacity = max(1.0, per_second * BURST_SHARE)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.hour: deque[float] = deque([time.monotonic()] * min(sent_last_hour, per_hour))

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
            self.updated = now
            while self.hour and now - self.hour[0] > 3600:
                self.hour.popleft()
            if len(self.hour) >= self.per_hour:
                await asyncio.sleep(min(60.0, 3600 - (now - self.hour[0]) + 0.01))
                continue
            if self.tokens >= 1:
                self.tokens -= 1
                self.hour.append(now)
                return
            await asyncio.sleep((1 - self.tokens) / self.per_second)


class Limiter(Protocol):
    """Waits until one more message may go."""

    async def acquire(self) -> None: ...


# A limiter by name ("email", "step:12"), messages per second and per hour.
LimiterFor = Callable[[str, float, int], Limiter]

CHUNK_SECONDS = 0.1  # a shared limiter takes about this long's worth of its rate at a time
CHUNK_MAX = 500
STASH_SECONDS = 0.25  # units taken and not used within this long are given up


def local_limiter(_name: str, per_second: float, per_hour: int) -> RateLimiter:
    return RateLimiter(per_second, per_hour)


def email_limits(name: str, per_second: float, per_hour: int) -> list[Limit]:
    return [Limit(f"{name}:second", per_second, 1.0), Limit(f"{name}:hour", per_hour, 3600.0)]


class SharedRateLimiter:
    """``RateLimiter``'s interface over limits every process shares (``ports.Rates``).
    It takes a chunk of units per round trip (about ``CHUNK_SECONDS`` of its fastest
    rate, 1 to ``CHUNK_MAX``: a longer window grants a chunk as readily as one unit)
    and hands them out one by one; units it does not use within ``STASH_SECONDS`` are
    given up (never used late, where they could add to another second's)."""

    def __init__(self, rates: Rates, limits: Sequence[Limit]) -> None:
        self.rates = rates
        self.limits = list(limits)
        fastest = max(limit.count / limit.per for limit in self.limits)  # the per-second rate, say
        self.chunk = max(1, min(CHUNK_MAX, int(fastest * CHUNK_SECONDS)))
        self._stash = 0
        self._taken = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                if self._stash and time.monotonic() - self._taken <= STASH_SECONDS:
                    self._stash -= 1
                    return
                granted, wait = await asyncio.to_thread(self.rates.take, self.limits, self.chunk)
                self._stash, self._taken = granted, time.monotonic()
                if not granted:
                    await asyncio.sleep(min(60.0, max(0.001, wait)))


def shared_limiters(rates: Rates) -> LimiterFor:
    """Limiters by name over ``rates``: per second and per hour, for every process."""

    def limiter(name: str, per_second: float, per_hour: int) -> Limiter:
        return SharedRateLimiter(rates, email_limits(name, per_second, per_hour))

    return limiter
