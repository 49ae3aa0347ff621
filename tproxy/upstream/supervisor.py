"""The failover supervisor: keeps one upstream connected, in order of preference.

``UpstreamSupervisor`` owns the ordered upstream list: it connects with
backoff, falls back to the next upstream on failure, fails back to a
preferred one when it is reachable again, and obeys the pool's
``Reconnect``. It tells its listener (the channel manager) when an upstream
is up, what it sends, and when it is lost; the SV1 miners stay connected
across all of that. How a failure is handled comes from
``tproxy.errors.action_for`` (every upstream peer error drops the connection);
anything else escaping a connection is our bug and is logged as one.

Backoff: when every upstream failed, the wait doubles from
``reconnect_backoff_initial_s`` up to ``reconnect_backoff_max_s`` (5 s by
default, so a pool that restarts is back in use within seconds), and each
wait is drawn at random in [step/2, step] so a fleet of proxies does not
reconnect in the same instant. Failed connects and failed fail-back probes
are logged one line per upstream and reason, then a count once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sv2.messages import AnyMessage, Reconnect
from tproxy.config import ProxySettings, UpstreamSettings
from tproxy.errors import Action, PeerError, UpstreamError, action_for
from tproxy.ratelog import RateLimitedLog
from tproxy.upstream.connection import Endpoint, UpstreamConnection

log = logging.getLogger("tproxy.upstream")

STABLE_CONNECTION_S = 2.0


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """Read-only summary of the supervisor, for monitoring."""

    connected: bool
    address: str | None  # host:port of the current upstream
    since: float | None  # connected at, or down since


class UpstreamListener(Protocol):
    """What the supervisor tells the channel manager."""

    async def on_upstream_up(self, up: UpstreamConnection) -> None:
        """Open channels on ``up``. Raising UpstreamError makes the supervisor move on."""

    def on_upstream_message(self, up: UpstreamConnection, msg: AnyMessage) -> None: ...

    def on_upstream_lost(self, up: UpstreamConnection, reason: str) -> None: ...


class UpstreamSupervisor:
    """Keeps one upstream connected, in order of preference, for as long as it runs."""

    def __init__(
        self,
        upstreams: list[UpstreamSettings],
        proxy: ProxySettings,
        listener: UpstreamListener,
        *,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.upstreams = upstreams
        self.proxy = proxy
        self.listener = listener
        self._now = now
        self._sleep = sleep
        self._rand = rand
        self.backoff_waits: list[float] = []  # the last waits between rounds (bounded), for tests and status
        self.probe_failures = 0
        self._probe_log = RateLimitedLog(log)
        self._fail_log = RateLimitedLog(log)
        self.current: UpstreamConnection | None = None
        self.current_index: int | None = None
        self.down_since: float | None = now()
        self.connects = 0
        self.failures = 0
        self.last_error = ""
        self._redirect: Endpoint | None = None
        self._switch = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failback_task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="upstream-supervisor")
        self._failback_task = asyncio.create_task(self._failback_loop(), name="upstream-failback")

    async def stop(self) -> None:
        self._stopping = True
        for t in (self._task, self._failback_task):
            # Cancel until done: a library await may swallow one cancellation.
            while t is not None and not t.done():
                t.cancel()
                await asyncio.wait({t}, timeout=0.5)
            if t is not None and not t.cancelled():
                t.exception()
        if self.current is not None:
            self.current.close()

    def on_reconnect_request(self, up: UpstreamConnection, msg: Reconnect) -> None:
        """The pool asked us to move (empty host / port 0 mean 'same')."""
        host = msg.new_host or up.endpoint.host
        port = msg.new_port or up.endpoint.port
        self._redirect = Endpoint(up.endpoint.settings, host, port)
        log.info("pool %s asked us to reconnect to %s:%s", up.endpoint, host, port)
        up.close()

    async def _run(self) -> None:
        backoff = self.proxy.reconnect_backoff_initial_s
        while not self._stopping:
            served = 0.0
            redirect, self._redirect = self._redirect, None
            if redirect is not None:
                served = await self._serve(self.upstreams.index(redirect.settings), redirect)
            else:
                for index, settings in enumerate(self.upstreams):
                    served = await self._serve(index, Endpoint.of(settings))
                    if served or self._redirect is not None:
                        break
            if self._redirect is not None:
                continue
            if served >= STABLE_CONNECTION_S:
                backoff = self.proxy.reconnect_backoff_initial_s
                continue  # lost after a good run: retry at once, most preferred first
            await self._sleep(self._jittered(backoff))
            backoff = min(backoff * 2, self.proxy.reconnect_backoff_max_s)

    def _jittered(self, step: float) -> float:
        """A wait in [step/2, step] (step capped at reconnect_backoff_max_s): never longer than the cap."""
        step = min(step, self.proxy.reconnect_backoff_max_s)
        wait = step / 2 + self._rand() * step / 2
        self.backoff_waits = [*self.backoff_waits[-63:], wait]
        return wait

    async def _serve(self, index: int, endpoint: Endpoint) -> float:
        """Connect to one endpoint and serve it until it is lost.

        Returns how many seconds it was up (0.0 if it never came up).
        """
        try:
            up = await UpstreamConnection.connect(endpoint, self.proxy, now=self._now)
        except UpstreamError as e:
            self._failed(endpoint, e, "unavailable")
            return 0.0
        run_task = asyncio.create_task(
            up.run(lambda m: self._dispatch(up, m)), name=f"upstream-read-{endpoint}"
        )
        try:
            await self.listener.on_upstream_up(up)
        except UpstreamError as e:
            await _cancel(run_task)
            up.close()
            self._failed(endpoint, e, "refused our channel")
            return 0.0
        except BaseException:  # cancelled while opening channels: reap the reader too
            await _cancel(run_task)
            up.close()
            raise
        started = self._now()
        self.current, self.current_index = up, index
        self.connects += 1
        self.down_since = None
        log.info("upstream %s is up (preference %d)", endpoint, index)
        self._fail_log.flush("failed upstream connects before this one: ")
        reason = "cancelled"
        try:
            reason = await self._until_lost(run_task)
        finally:  # also when cancelled (shutdown): the listener must hear that the upstream is gone
            self.current = None
            self.current_index = None
            self.down_since = self._now()
            if self._stopping:
                reason = "proxy shutting down"
            self.last_error = reason
            up.close()
            (log.info if self._stopping else log.warning)("upstream %s closed: %s", endpoint, reason)
            self.listener.on_upstream_lost(up, reason)
        return max(self._now() - started, 1e-9)

    def _failed(self, endpoint: Endpoint, err: UpstreamError, what: str) -> None:
        """An upstream that never came up (every UpstreamError is DROP_UPSTREAM: try the next one)."""
        self.failures += 1
        self.last_error = str(err)
        # With a 5 s backoff cap an outage retries often: the first failure of each kind is
        # logged at once, repeats once a minute with their count (all counted in ``failures``).
        self._fail_log.log(logging.WARNING, (str(endpoint), what, type(err).__name__), f"upstream {endpoint} {what}: {err}")

    async def _until_lost(self, run_task: asyncio.Task[None]) -> str:
        """Wait until the reader ends or a fail-back is due; returns why the connection ends."""
        switch_wait = asyncio.create_task(self._switch.wait(), name="upstream-switch-wait")
        reason = "failing back to a preferred upstream"
        try:
            done, _ = await asyncio.wait({run_task, switch_wait}, return_when=asyncio.FIRST_COMPLETED)
            if run_task in done:
                exc = run_task.exception()
                reason = str(exc) if exc else "closed"
                if exc is not None and not (isinstance(exc, PeerError) and action_for(exc) is Action.DROP_UPSTREAM):
                    # Not the pool's doing: our own bug. The connection is dropped all the
                    # same (its state is unknown), but the traceback must be seen.
                    log.error("upstream reader failed", exc_info=exc)
        finally:
            await _cancel(run_task)
            await _cancel(switch_wait)
            self._switch.clear()
        return reason

    def status(self) -> UpstreamStatus:
        cur = self.current
        if cur is None:
            return UpstreamStatus(connected=False, address=None, since=self.down_since)
        return UpstreamStatus(connected=True, address=str(cur.endpoint), since=cur.connected_at)

    def _dispatch(self, up: UpstreamConnection, msg: AnyMessage) -> None:
        if isinstance(msg, Reconnect):
            self.on_reconnect_request(up, msg)
            return
        self.listener.on_upstream_message(up, msg)

    async def _failback_loop(self) -> None:
        """While on a fallback upstream, probe the preferred ones and switch back."""
        while not self._stopping:
            await self._sleep(self.proxy.failback_interval_s)
            idx = self.current_index
            if self.current is None or idx is None or idx == 0:
                continue
            for settings in self.upstreams[:idx]:
                endpoint = Endpoint.of(settings)
                try:
                    probe = await UpstreamConnection.connect(endpoint, self.proxy, now=self._now)
                except UpstreamError as e:
                    self.probe_failures += 1
                    self._probe_log.log(
                        logging.INFO, (str(endpoint), type(e).__name__), f"fail-back probe of {endpoint} failed: {e}"
                    )
                    continue
                probe.close()
                log.info("preferred upstream %s:%s is back; failing back", settings.address, settings.port)
                self._switch.set()
                break


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it, without swallowing a cancellation of our own."""
    if not task.done():
        task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: its failure was already reported where it happened
