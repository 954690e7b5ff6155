"""spreadwatch actors: the trio tasks that ingest, compute, fan out and record.

Every actor is ``async def run_<name>(..., *, task_status=trio.TASK_STATUS_IGNORED)``,
owns its resources with ``async with``, and talks to others only over the bounded
channels of :mod:`actors.channels`.
"""

import os

# pyarrow allocates from glibc's heap rather than its bundled mimalloc. The heap-trimmer
# (actors.monitor) then gives back what an hourly compaction freed, as it does for the
# rest of the process: mimalloc held ~7x its peak in use (86 MB for 12 MB) and kept
# ~25 MB after each compaction, out of the trimmer's reach (docs/architecture.md,
# "Rolling windows and the memory budget"). pyarrow reads this once, when it is first
# imported, so it is set here, before any actor imports it; a value the user set wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
