"""A loopback control port for the simulated venues, so a test or a person outside the
process can take a venue down and bring it back (``python -m app.sim --control-port``,
``spreadwatch demo --sim-control-port``).

Protocol: one command per line (ASCII, at most 256 bytes), one answer line each,
``ok <detail>`` or ``error <message>``::

    down VENUE      drop its connections and refuse new ones (HTTP 503): the venue is down
    up VENUE        accept connections again and end a silence
    drop VENUE      drop its connections once (the client reconnects at once)
    silence VENUE   keep sockets open, send nothing (SimVenueControl.go_silent)
    resume VENUE    end a silence
    status          one JSON line: per venue refusing / silent and its counters
                    (SimVenueStatistics: connections, subscriptions, duplicates, ...)
    help            the command list

Only a loopback address can be bound: this is a test and demo facility, not an admin API.
Bad input gets an ``error`` line and is counted; a line over the limit also closes that
connection. Nothing here can stop the simulator.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import trio

from app.sim.server import SimVenueControl

log = logging.getLogger(__name__)

MAX_LINE = 256
COMMANDS = ("down", "up", "drop", "silence", "resume", "status", "help")


@dataclass(slots=True)
class RemoteCounters:
    connections: int = 0
    commands: int = 0
    errors: int = 0


def execute(line: str, controls: Mapping[str, SimVenueControl], counters: RemoteCounters) -> str:
    """Run one command line against ``controls``; return the answer line (no newline)."""
    words = line.split()
    if not words:
        counters.errors += 1
        return "error empty command; try 'help'"
    command, rest = words[0].lower(), words[1:]
    if command == "help":
        counters.commands += 1
        return "ok commands: down VENUE, up VENUE, drop VENUE, silence VENUE, resume VENUE, status, help"
    if command == "status":
        counters.commands += 1
        venues = {name: {"refusing": c.refusing_connections, "silent": c.silent,
                         **dataclasses.asdict(c.statistics())}
                  for name, c in sorted(controls.items())}
        doc = {"venues": venues, "commands": counters.commands, "errors": counters.errors}
        return "ok " + json.dumps(doc, separators=(",", ":"))
    if command not in COMMANDS:
        counters.errors += 1
        return f"error unknown command {command[:40]!r}; try 'help'"
    if len(rest) != 1:
        counters.errors += 1
        return f"error usage: {command} VENUE"
    venue = rest[0].lower()
    control = controls.get(venue)
    if control is None:
        counters.errors += 1
        return f"error unknown venue {venue[:40]!r} (simulated: {', '.join(sorted(controls))})"
    counters.commands += 1
    if command == "down":
        control.refuse_connections(True)
        dropped = control.drop_connections()
        detail = f"{venue} down: {dropped} connection(s) dropped, new ones refused"
    elif command == "up":
        control.refuse_connections(False)
        control.resume()
        detail = f"{venue} up"
    elif command == "drop":
        detail = f"{venue}: {control.drop_connections()} connection(s) dropped"
    elif command == "silence":
        control.go_silent()
        detail = f"{venue} silent"
    else:
        control.resume()
        detail = f"{venue} resumed"
    log.warning("sim control: %s", detail)
    return "ok " + detail


async def _serve_client(stream: trio.SocketStream, controls: Mapping[str, SimVenueControl],
                        counters: RemoteCounters) -> None:
    counters.connections += 1
    buffer = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(MAX_LINE + 1)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                try:
                    answer = execute(raw.decode("ascii").strip(), controls, counters)
                except UnicodeDecodeError:
                    counters.errors += 1
                    answer = "error commands are ASCII"
                await stream.send_all(answer.encode() + b"\n")
            if len(buffer) > MAX_LINE:
                counters.errors += 1
                await stream.send_all(f"error line over {MAX_LINE} bytes; closing\n".encode())
                return


async def run_control_server(
    controls: Mapping[str, SimVenueControl],
    *,
    port: int,
    host: str = "127.0.0.1",
    counters: RemoteCounters | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control port until cancelled; reports the bound port once listening.

    Error handling: a non-loopback ``host`` is refused with ValueError; a client's
    broken connection ends that client only.
    """
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the simulator's control port binds to loopback only, not {host!r}")
    counters = counters or RemoteCounters()

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _serve_client(stream, controls, counters)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("sim control client went away: %s", exc)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, port, host=host))
        bound = listeners[0].socket.getsockname()[1]
        log.info("simulator control on %s:%d", host, bound)
        task_status.started(int(bound))
