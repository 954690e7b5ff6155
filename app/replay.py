"""``spreadwatch replay``: recorded quotes through the live pipeline, the UI shows them live.

    spreadwatch replay --data-dir D [--from T] [--to T] [--speed N] [--port P] [--config FILE]

``T`` is milliseconds since the epoch or ISO 8601 (UTC unless a zone is given); the
default range is everything recorded. The whole runtime runs on a replay clock
(:class:`actors.replay.ReplayClock`) starting at ``--from``; the recorder is off, so a
replay never writes into the directory it reads; ``/api/history`` reads that directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
from pathlib import Path

import trio

from actors.config import Config
from actors.history import HistoryError, parse_time
from actors.replay import ReplayClock, ReplayStatus, recorded_span, run_replay
from app.runtime import Runtime, run_spreadwatch
from app.web import run_web

log = logging.getLogger("spreadwatch.replay")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, required=True, help="the recorded data to replay")
    p.add_argument("--from", dest="from_", default=None, metavar="T",
                   help="start (ms since the epoch or ISO 8601; default: the first recorded quote)")
    p.add_argument("--to", default=None, metavar="T",
                   help="end, exclusive (default: after the last recorded quote)")
    p.add_argument("--speed", type=float, default=1.0, help="recorded seconds per second (default 1)")
    p.add_argument("--config", type=Path, default=None,
                   help="configuration file (fees, staleness, thresholds; default ./config.toml)")
    p.add_argument("--port", type=int, default=None, help="web port (default from config: 8000)")
    p.add_argument("--host", default=None, help="web bind address (default 127.0.0.1)")
    p.add_argument("--log-level", default="INFO")


def replay_range(args: argparse.Namespace) -> tuple[int, int]:
    """[from, to) in ns from the arguments and the recorded data; raises ValueError."""
    if not (math.isfinite(args.speed) and args.speed > 0):
        raise ValueError(f"--speed: must be a positive number, got {args.speed}")
    data_dir: Path = args.data_dir
    if not (data_dir / "quotes").is_dir():
        raise ValueError(f"--data-dir: no recorded quotes under {data_dir}")
    try:
        from_ns = parse_time("--from", args.from_) if args.from_ else None
        to_ns = parse_time("--to", args.to) if args.to else None
    except HistoryError as exc:
        raise ValueError(exc.message) from None
    if from_ns is None or to_ns is None:
        span = recorded_span(data_dir)
        if span is None:
            raise ValueError(f"--data-dir: no recorded quotes under {data_dir}")
        from_ns = span[0] if from_ns is None else from_ns
        to_ns = span[1] + 1 if to_ns is None else to_ns
    if to_ns <= from_ns:
        raise ValueError("--to must be after --from")
    return from_ns, to_ns


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the replay until SIGINT/SIGTERM; returns the exit code."""
    try:
        from_ns, to_ns = replay_range(args)
    except ValueError as exc:
        log.error("spreadwatch replay: %s", exc)  # stderr, set up by the CLI
        return 2
    config = dataclasses.replace(config, recorder=dataclasses.replace(config.recorder, enabled=False))
    trio.run(_main, config, args.data_dir, from_ns, to_ns, args.speed)
    return 0


async def _main(config: Config, data_dir: Path, from_ns: int, to_ns: int, speed: float) -> None:
    from app.cli import _watch_signals  # late: app.cli imports this module

    shutdown = trio.Event()
    clock = ReplayClock(from_ns, speed)
    status = ReplayStatus()
    source = functools.partial(run_replay, data_dir=data_dir, clock=clock, from_ns=from_ns,
                               to_ns=to_ns, status=status)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, shutdown)

        async def pipeline(task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED) -> None:
            await run_spreadwatch(config, shutdown=shutdown, web=run_web, data_dir=data_dir,
                                  clock_ns=clock, source=source, replay_status=status,
                                  task_status=task_status)
            nursery.cancel_scope.cancel()

        runtime: Runtime = await nursery.start(pipeline)
        for url in runtime.urls:
            log.info("replaying %s at %gx: %s/", data_dir, speed, url)
        await shutdown.wait()
        nursery.cancel_scope.deadline = trio.current_time() + config.server.shutdown_timeout_s + 0.5
    log.info("stopped")
