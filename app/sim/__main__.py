"""Run the simulated venues in their own process: ``python -m app.sim``.

    python -m app.sim [--venues binance,okx] [--seed N] [--symbols N] [--chaos SECONDS]
                      [--control-port PORT]

Prints one JSON line, ``{"binance": {"rest_url": ..., "ws_url": ...}, ...}``, once every
venue listens, then serves until SIGINT/SIGTERM or until its standard input closes
(so it never outlives the ``spreadwatch demo`` that started it). ``spreadwatch demo``
runs it as a child process so the simulator and the pipeline each get a core and the
pipeline's figures on /health are its own.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import trio

from app.sim.remote import run_control_server
from app.sim.server import VENUES, SimVenueControl, available_venues, run_sim_venues


async def _until_stdin_closes() -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    while await stdin.receive_some(4096):
        pass


async def _main(args: argparse.Namespace) -> None:
    names = tuple(args.venues.split(",")) if args.venues else available_venues()
    controls = {name: SimVenueControl() for name in names}
    async with trio.open_nursery() as nursery:
        endpoints = await nursery.start(functools.partial(
            run_sim_venues, names, seed=args.seed, symbols=args.symbols, chaos=args.chaos,
            controls=controls))
        if args.control_port is not None:
            await nursery.start(functools.partial(run_control_server, controls, port=args.control_port))
        line = json.dumps({n: {"rest_url": e.rest_url, "ws_url": e.ws_url} for n, e in endpoints.items()})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as waiters:
                waiters.start_soon(_cancel_after, _until_stdin_closes, waiters.cancel_scope)
                async for _ in signals:
                    break
                waiters.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def _cancel_after(fn: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    await fn()
    scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--venues", default=None, help=f"comma-separated, of {','.join(VENUES)}")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--symbols", type=int, default=None)
    parser.add_argument("--chaos", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--control-port", type=int, default=None, metavar="PORT",
                        help="take fault commands on 127.0.0.1:PORT (app/sim/remote.py)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)-7s sim %(name)s: %(message)s")
    trio.run(_main, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
