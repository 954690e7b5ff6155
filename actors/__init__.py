"""spreadwatch actors: the trio tasks that ingest, compute, fan out and record.

Every actor is ``async def run_<name>(..., *, task_status=trio.TASK_STATUS_IGNORED)``,
owns its resources with ``async with``, and talks to others only over the bounded
channels of :mod:`actors.channels`.
"""
