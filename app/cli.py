"""The ``spreadwatch`` command line.

    spreadwatch demo [--port P] [--data-dir D] [--config FILE]
        simulated Binance and Bybit on loopback, the full pipeline, the UI
    spreadwatch run [--config FILE] [--port P] [--data-dir D]
        the same pipeline against the real venues named in the config
    spreadwatch replay --data-dir D [--from T] [--to T] [--speed N] [--port P] [--config FILE]
        recorded quotes through the same pipeline (app/replay.py)
    spreadwatch ingest [--venues A,B] [--simulated] [--nats URL] [--config FILE]
    spreadwatch serve [--port P] [--nats URL] [--config FILE]
    spreadwatch record [--data-dir D] [--nats URL] [--config FILE]
        the pipeline in several processes joined by NATS (app/roles.py): connectors, web,
        recorder; run as many ingest (different venues) and serve processes as needed

SIGINT and SIGTERM stop the process gracefully: everything buffered is written and
every task ends; the exit code is 0. A bad configuration exits with code 2 and a
message naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import signal
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path

import trio

from actors.budget import check_budget
from actors.config import Config, ConfigError, load_config, validated
from app import replay as replay_command
from app import tail as feed_tail
from app.roles import ROLES, run_ingest, run_record, run_serve
from app.runtime import Runtime, run_spreadwatch
from app.web import run_web

log = logging.getLogger("spreadwatch")



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spreadwatch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("demo", "run against simulated venues on loopback"),
                            ("run", "run against the real venues in the config"),
                            ("ingest", "connect to venues and publish to NATS"),
                            ("serve", "shards, feed and UI fed from NATS"),
                            ("record", "record the NATS stream to Parquet")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", type=Path, default=None,
                       help="configuration file (default: ./config.toml when present)")
        p.add_argument("--port", type=int, default=None, help="web port (default from config: 8000)")
        p.add_argument("--host", default=None, help="web bind address (default 127.0.0.1)")
        p.add_argument("--data-dir", type=Path, default=None, help="where Parquet files go")
        p.add_argument("--log-level", default="INFO")
        if name in ROLES:
            p.add_argument("--nats", default=None, metavar="URL[,URL]",
                           help="NATS servers (default from config: nats://127.0.0.1:4222)")
        if name == "ingest":
            p.add_argument("--venues", default=None,
                           help="comma-separated venues this process connects to (default: all enabled)")
            p.add_argument("--simulated", action="store_true",
                           help="start the simulated venues and use them (like demo)")
            p.add_argument("--seed", type=int, default=7, help="seed of the simulated market")
            p.add_argument("--symbols", type=int, default=None, help="simulated symbol universe")
        if name == "demo":
            p.add_argument("--seed", type=int, default=7, help="seed of the simulated market")
            p.add_argument("--venues", default=None,
                           help="comma-separated simulated venues (default: every simulated venue)")
            p.add_argument("--symbols", type=int, default=None,
                           help="size of the simulated symbol universe (default: ~55 real names)")
            p.add_argument("--chaos", type=float, default=None, metavar="SECONDS",
                           help="mean seconds between random venue faults (drops, silences, "
                                "malformed frames, slow sends, shutdown notices, forced cuts)")
            p.add_argument("--sim-control-port", type=int, default=None, metavar="PORT",
                           help="let the simulated venues take fault commands on 127.0.0.1:PORT "
                                "(one line each, e.g. 'down binance'; see app/sim/remote.py)")
    tail = sub.add_parser("tail", help="print the live feed's frames (the reference client)",
                          description="Subscribe to feed topics and print each frame on one line; "
                                      "exit 0 at the end, 1 when the feed is unreachable or closed.")
    feed_tail.add_arguments(tail)
    replay_command.add_arguments(sub.add_parser(
        "replay", help="feed recorded quotes through the pipeline; the UI shows them live",
        description=replay_command.__doc__.split("\n\n")[0] if replay_command.__doc__ else None))
    return parser


def _load(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and Path("config.toml").is_file():
        path = Path("config.toml")
    config = load_config(path)
    server = config.server
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port: must be 0..65535, got {args.port}")
        server = dataclasses.replace(server, port=args.port)
    if args.host is not None:
        server = dataclasses.replace(server, host=args.host)
    recorder = config.recorder
    if args.data_dir is not None:
        recorder = dataclasses.replace(recorder, data_dir=str(args.data_dir))
    nats = config.nats
    if getattr(args, "nats", None):
        nats = dataclasses.replace(nats, servers=tuple(args.nats.split(",")))
    return validated(dataclasses.replace(config, server=server, recorder=recorder, nats=nats))


def point_at(config: Config, endpoints: Mapping[str, tuple[str, str]]) -> Config:
    """``config`` with exactly the venues in ``endpoints`` enabled, at those (REST, WS) URLs."""
    venues = {}
    for name, vconf in config.venues.items():
        if name in endpoints:
            rest_url, ws_url = endpoints[name]
            venues[name] = dataclasses.replace(vconf, enabled=True, rest_url=rest_url, ws_url=ws_url)
        else:
            venues[name] = dataclasses.replace(vconf, enabled=False)
    return dataclasses.replace(config, venues=types.MappingProxyType(venues))


async def _watch_signals(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            shutdown.set()
            return


Endpoints = dict[str, tuple[str, str]]


async def _start_simulator(args: argparse.Namespace,
                           task_status: trio.TaskStatus[Endpoints] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the simulated venues as a child process (``python -m app.sim``) until cancelled.

    The child reports its endpoints as one JSON line; it exits when its standard input
    closes, so it never outlives this process. Running it apart gives the simulator and
    the pipeline a core each.
    """
    command = [sys.executable, "-m", "app.sim", "--seed", str(args.seed),
               "--log-level", args.log_level]
    for flag, value in (("--venues", args.venues), ("--symbols", args.symbols), ("--chaos", args.chaos),
                        ("--control-port", args.sim_control_port)):
        if value is not None:
            command += [flag, str(value)]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(functools.partial(
            trio.run_process, command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False))
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(30):
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    raise RuntimeError("the simulated venues exited before they were ready")
                buffer += chunk
        endpoints = json.loads(buffer.split(b"\n", 1)[0])
        log.info("simulated venues: %s", ", ".join(endpoints))
        task_status.started({n: (e["rest_url"], e["ws_url"]) for n, e in endpoints.items()})
        await trio.sleep_forever()


async def _main(command: str, config: Config, args: argparse.Namespace) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, shutdown)
        if command == "demo" or (command == "ingest" and args.simulated):
            sim_args = args if command == "demo" else argparse.Namespace(
                seed=args.seed, log_level=args.log_level, venues=None, symbols=args.symbols,
                chaos=None, sim_control_port=None)
            endpoints = await nursery.start(_start_simulator, sim_args)
            config = point_at(config, endpoints)

        async def pipeline(task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
            if command == "ingest":
                venues = args.venues.split(",") if args.venues else None
                await run_ingest(config, shutdown=shutdown, venues=venues, task_status=task_status)
            elif command == "record":
                await run_record(config, shutdown=shutdown, task_status=task_status)
            elif command == "serve":
                await run_serve(config, shutdown=shutdown, web=run_web, task_status=task_status)
            else:
                await run_spreadwatch(config, shutdown=shutdown, web=run_web, task_status=task_status)
            nursery.cancel_scope.cancel()  # graceful shutdown done: stop the simulator too

        runtime = await nursery.start(pipeline)
        for url in runtime.urls if isinstance(runtime, Runtime) else ():
            log.info("spreadwatch is up: %s/ (health: %s/health)", url, url)
        await shutdown.wait()
        nursery.cancel_scope.deadline = trio.current_time() + config.server.shutdown_timeout_s + 0.5
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tail":
        return feed_tail.run_tail(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    try:
        config = _load(args)
        check_budget(config, nats=args.command in ROLES)
    except ConfigError as exc:
        print(f"spreadwatch: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "replay":
        return replay_command.run(args, config)
    if args.command in ("demo", "ingest") and args.venues:
        unknown = set(args.venues.split(",")) - set(config.venues)
        if unknown:
            print(f"spreadwatch: --venues: unknown venue(s) {', '.join(sorted(unknown))}",
                  file=sys.stderr)
            return 2
    if args.command == "ingest" and args.venues and not args.simulated:
        disabled = set(args.venues.split(",")) - set(config.enabled_venues())
        if disabled:
            print(f"spreadwatch: --venues: not enabled in the configuration: "
                  f"{', '.join(sorted(disabled))}", file=sys.stderr)
            return 2
    trio.run(_main, args.command, config, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
