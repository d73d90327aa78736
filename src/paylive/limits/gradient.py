"""How many commands one worker works on at once: a limit that follows measured latency.

A fixed bound (the old 64) is right for one machine on one day only: when the worker
gets less CPU (neighbours, a flash sale, a slower Redis) 64 commands in flight are
64 slow commands, each holding its caller, and the queue they form is latency
without throughput. The limit here is a gradient controller in the manner of
Netflix's concurrency-limits (Gradient2): it compares the recent latency of commands
with their long-run latency, shrinks the limit when the recent one rises above
``tolerance`` times the long-run one (a queue is forming), and grows it by about its
square root when latency holds (there is room). So the worker admits what it can
finish at its normal latency, and refuses the rest at once, which is cheap.

The loop's own lag is a second signal (``lagged``): a command's latency is measured
from when its connection parsed it, but a refusal waits for everything the loop runs
before it, accepted work included. While a worker's loop is late by more than its
target because of its own work (not because it waited for a core), the limit shrinks
by a tenth a tick and does not grow (the gradient may still shrink it), so that the
worker keeps the headroom to answer a refusal at once.

Pure: the caller says when a command ended and how long it took (seconds) and how
many were in flight; no clock and no I/O here.
"""

from __future__ import annotations

import math

# What a tick of the loop late past its target leaves of the limit.
LAG_BACKOFF = 0.9


class GradientLimit:
    """A concurrency limit between ``min_limit`` and ``max_limit``.

    ``sample(rtt, in_flight)`` after each command; ``limit`` is the current bound
    (an int). The long-run latency is an average over about ``long_window`` windows of
    ``short_window`` commands (600 by default): a slow spell that lasts (the worker
    gets less CPU for a while) becomes the baseline within seconds rather than
    starving the worker of work it could do at that latency. While the worker is not using half of its limit, latency says nothing
    about the limit and it is left alone (an idle worker's limit does not drift up
    to the maximum nor down to the minimum)."""

    def __init__(
        self,
        initial: int,
        min_limit: int,
        max_limit: int,
        tolerance: float = 2.0,
        smoothing: float = 0.2,
        long_window: int = 60,
        short_window: int = 10,
    ) -> None:
        self.min_limit = max(1, min_limit)
        self.max_limit = max(self.min_limit, max_limit)
        self._limit = float(min(self.max_limit, max(self.min_limit, initial)))
        self.tolerance = tolerance
        self.smoothing = smoothing
        self._long_alpha = 2 / (long_window + 1)
        self._short_window = max(1, short_window)
        self._short: list[float] = []
        self.long_rtt = 0.0
        # The loop's last tick was late past its target: no growth until one is not.
        self._late = False

    @property
    def limit(self) -> int:
        return int(self._limit)

    def lagged(self, lag: float, target: float) -> None:
        """The loop ran ``lag`` seconds late by its own work; past ``target`` the limit
        shrinks (multiplicative decrease; the gradient grows it back)."""
        self._late = target > 0 and lag > target
        if self._late:
            self._limit = max(self.min_limit, self._limit * LAG_BACKOFF)

    def sample(self, rtt: float, in_flight: int) -> None:
        """One command ended after ``rtt`` seconds with ``in_flight`` (itself
        included) being worked on when it ended."""
        if rtt <= 0:
            return
        self._short.append(rtt)
        if len(self._short) < self._short_window:
            return
        # The median of the last few: one slow command (a provider call) is not a queue.
        short = sorted(self._short)[len(self._short) // 2]
        self._short.clear()
        if self.long_rtt <= 0:
            self.long_rtt = short
        else:
            self.long_rtt += self._long_alpha * (short - self.long_rtt)
        if self.long_rtt > 2 * short:
            # Recovering from a slow spell: let the baseline come back down sooner.
            self.long_rtt = 0.95 * self.long_rtt + 0.05 * short
        if in_flight < self._limit / 2:
            return  # not using the limit: latency cannot say whether it is right
        gradient = max(0.5, min(1.0, self.tolerance * self.long_rtt / short))
        target = self._limit * gradient + (0.0 if self._late else math.sqrt(self._limit))
        self._limit = (1 - self.smoothing) * self._limit + self.smoothing * target
        self._limit = min(self.max_limit, max(self.min_limit, self._limit))
