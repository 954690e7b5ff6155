"""The supervisor: one nursery that owns every long-lived actor, restarts, and health.

Each actor is started with :meth:`Supervisor.start`, which returns only once the actor
has called ``task_status.started()`` (FAILURE_MODES #4: nothing is "started" before it
is ready). An actor that raises is restarted after a capped, jittered backoff, and its
failure is recorded (state, restart count, last error) for ``/health``. An actor that
returns normally is finished and not restarted. Cancellation always propagates: it is
how the tree shuts down (FAILURE_MODES #18, #19).

Resource handling: the supervisor owns no resources besides its nursery; every actor
owns its own with ``async with``. Error handling: ``Exception`` (and exception groups
of them) from an actor is caught, logged and retried; ``BaseException`` such as
``KeyboardInterrupt`` or ``trio.Cancelled`` propagates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.backoff import Backoff

log = logging.getLogger(__name__)

#: an actor that ran this long before failing starts its backoff afresh
STABLE_AFTER_S = 60.0


def describe_error(exc: BaseException) -> str:
    """One line naming the innermost error(s) of ``exc``."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(e) for e in exc.exceptions[:3])
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class ActorInfo:
    """What the supervisor knows of one actor; written only by the supervisor."""

    name: str
    state: str = "starting"  # starting | running | restarting | stopped | cancelled
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    started_at: float = 0.0
    restartable: bool = True

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "uptime_s": round(now - self.started_at, 3) if self.state == "running" else 0.0,
        }


@dataclass(slots=True)
class ActorHandle:
    info: ActorInfo
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)

    def cancel(self) -> None:
        self.scope.cancel()

    async def wait(self) -> None:
        await self.finished.wait()


class Supervisor:
    """Starts, restarts and reports actors inside one nursery.

    Use :func:`open_supervisor`; actors are kept in start order for ``/health``.
    """

    def __init__(self, nursery: trio.Nursery, *, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, wall: Callable[[], float] = time.time) -> None:
        self._nursery = nursery
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._wall = wall
        self._actors: dict[str, ActorInfo] = {}

    async def start(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                    restart: bool = True) -> ActorHandle:
        """Start ``fn(*args, task_status=...)`` as actor ``name``; return once it is ready."""
        if name in self._actors and self._actors[name].state not in ("stopped", "cancelled"):
            raise ValueError(f"actor {name!r} is already running")
        info = ActorInfo(name=name, restartable=restart)
        self._actors[name] = info
        handle = ActorHandle(info)
        await self._nursery.start(self._supervise, handle, fn, args)
        return handle

    def start_soon(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                   restart: bool = True) -> ActorHandle:
        """Like :meth:`start`, without waiting for readiness (for dynamically added actors)."""
        info = ActorInfo(name=name, restartable=restart)
        self._actors[name] = info
        handle = ActorHandle(info)
        self._nursery.start_soon(self._supervise, handle, fn, args)
        return handle

    def forget(self, name: str) -> None:
        """Drop a finished actor from the health listing."""
        info = self._actors.get(name)
        if info is not None and info.state in ("stopped", "cancelled"):
            del self._actors[name]

    async def _supervise(self, handle: ActorHandle, fn: Callable[..., Awaitable[Any]],
                         args: tuple[Any, ...],
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        info = handle.info
        backoff = Backoff(self._backoff_initial_s, self._backoff_max_s)
        reported = False
        try:
            with handle.scope:
                while True:
                    info.state = "starting"
                    began = trio.current_time()
                    try:
                        async with trio.open_nursery() as nursery:
                            await nursery.start(_call_with_status, fn, args)
                            info.state = "running"
                            info.started_at = self._wall()
                            if not reported:
                                reported = True
                                task_status.started()
                        info.state = "stopped"
                        return
                    except Exception as exc:  # an actor's failure is data, not a crash
                        info.last_error = describe_error(exc)
                        info.last_error_at = self._wall()
                        if not info.restartable:
                            info.state = "stopped"
                            log.error("actor %s failed and is not restartable: %s",
                                      info.name, info.last_error)
                            if not reported:
                                raise
                            return
                        if trio.current_time() - began > STABLE_AFTER_S:
                            backoff.reset()
                        info.restarts += 1
                        info.state = "restarting"
                        delay = backoff.next_delay()
                        log.warning("actor %s failed (%s); restart %d in %.2fs", info.name,
                                    info.last_error, info.restarts, delay)
                        await trio.sleep(delay)
        finally:
            if info.state not in ("stopped",):
                info.state = "cancelled"
            handle.finished.set()

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._wall()
        return [info.as_dict(now) for info in self._actors.values()]

    def infos(self) -> list[ActorInfo]:
        return list(self._actors.values())


async def _call_with_status(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await fn(*args, task_status=task_status)
