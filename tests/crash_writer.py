"""Child process of tests/test_recorder_crash.py: the real recorder under a steady stream of quotes.

    python -m tests.crash_writer DATA_DIR FIRST_SEQ FLUSH_INTERVAL_S

Prints ``ready <temp files removed> <superseded files removed>`` once the recorder has
started (start-up clean-up done), then ``durable <rows written>`` whenever the recorder's
count of written rows grows. Quotes carry the wall clock as ``recv_ts`` and consecutive
``seq`` numbers from FIRST_SEQ. The recorder's clock runs an hour ahead with no grace, so
the current hour is compacted over and over while parts keep arriving: a kill can land
in a flush, in a compaction, or between the two steps of either. Runs until killed.
"""

from __future__ import annotations

import pathlib
import sys
import time

import trio

from actors.channels import DropChannel
from actors.recorder import NS_PER_HOUR, RecorderStatus, run_recorder
from actors.records import Quote

# Quotes per millisecond: enough that flushes and compactions take a while, so kills land in them.
BATCH = 20


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(data_dir: pathlib.Path, first_seq: int, flush_interval_s: float) -> None:
    inbox: DropChannel[Quote] = DropChannel("recorder", 1_000_000)
    status = RecorderStatus()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=data_dir, max_buffered_rows=1_000_000, flush_interval_s=flush_interval_s,
            compact_after_s=0.0, compact_check_s=0.05, clock_ns=lambda: time.time_ns() + NS_PER_HOUR,
            status=status, task_status=task_status))  # type: ignore[arg-type]
        say(f"ready {status.temp_files_cleaned} {status.superseded_removed}")
        seq = first_seq
        durable = 0
        while True:
            now = time.time_ns()
            inbox.put_nowait([Quote("binance", "BTC/USDT", 100.0, 1.0, 100.5, 1.0, now // 10**6, now, seq + i)
                              for i in range(BATCH)])
            seq += BATCH
            if status.rows_written["quotes"] != durable:
                durable = status.rows_written["quotes"]
                say(f"durable {durable}")
            await trio.sleep(0.001)


if __name__ == "__main__":
    trio.run(main, pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
