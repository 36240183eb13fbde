"""The send policy shared by every channel (email, X, the newsroom): attempts,
backoff with jitter, the error budget that pauses a step, and rate limits."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta


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
    """Messages per second (a token bucket) and per hour (a running count)."""

    def __init__(self, per_second: float, per_hour: int, sent_last_hour: int = 0) -> None:
        self.per_second = per_second
        self.per_hour = per_hour
        self.tokens = max(1.0, per_second)
        self.updated = time.monotonic()
        self.hour: deque[float] = deque([time.monotonic()] * min(sent_last_hour, per_hour))

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(
                max(1.0, self.per_second), self.tokens + (now - self.updated) * self.per_second
            )
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
