"""The whole pipeline against simulated venues on loopback, for end-to-end tests."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from actors.config import Config, load_config
from app.cli import point_at
from app.runtime import Runtime, run_spreadwatch
from app.sim.server import run_sim_venues
from app.web import run_web

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def sim_pipeline(data_dir: Path, venues: Sequence[str], *, seed: int = 0,
                       configure: Callable[[Config], Config] = lambda c: c,
                       **sim: Any) -> AsyncIterator[Runtime]:
    """Simulated ``venues`` (``sim`` goes to :func:`run_sim_venues`), the repository's
    config.toml pointed at them with the web server on a free port (then ``configure``),
    and the pipeline with its web server. On leaving, a graceful shutdown that must end
    within 5 s, then the simulators are cancelled."""
    async with trio.open_nursery() as nursery:
        endpoints = await nursery.start(functools.partial(run_sim_venues, venues, seed=seed, **sim))
        config = point_at(load_config(ROOT / "config.toml"),
                          {n: (e.rest_url, e.ws_url) for n, e in endpoints.items()})
        config = configure(dataclasses.replace(config, server=dataclasses.replace(config.server, port=0)))
        shutdown = trio.Event()
        stopped = trio.Event()

        async def pipeline(task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED) -> None:
            await run_spreadwatch(config, shutdown=shutdown, web=run_web, data_dir=data_dir,
                                  task_status=task_status)
            stopped.set()

        yield await nursery.start(pipeline)
        shutdown.set()
        with trio.fail_after(5):
            await stopped.wait()
        nursery.cancel_scope.cancel()  # the simulated venues run until cancelled
