"""A process that logs records at a steady rate and then dies by SIGKILL, to measure what a crash loses.

``python -m tests.logstore.crash_child --url URL --spool-dir DIR --rate R --kill-after S`` submits
records ``c0000000``, ``c0000001``, ... at R per second. Every 5 ms it prints ``submitted durable`` (the
writer's count of records committed or fsync'd to the spool); after S seconds it prints the final
``kill submitted durable`` line and sends itself SIGKILL, with the writer wherever it happens to be.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from logstore import LogWriter
from tests.logstore.helpers import make_record, settings, stored_ids, wait_until

TICK_S = 0.005


async def run(args: argparse.Namespace) -> None:
    config = settings(
        args.url,
        Path(args.spool_dir),
        spool_dir=args.spool_dir,
        batch_size=args.batch_size,
        flush_interval_s=args.flush_interval,
    )
    writer = LogWriter(config, write_timeout_s=2.0)
    await writer.start()
    start = time.monotonic()
    submitted = 0
    while True:
        elapsed = time.monotonic() - start
        due = int(elapsed * args.rate)
        while submitted < due:
            writer.submit(make_record(f"c{submitted:07d}"))
            submitted += 1
        if elapsed >= args.kill_after:
            sys.stdout.write(f"kill {submitted} {writer.durable}\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdout.write(f"{submitted} {writer.durable}\n")
        sys.stdout.flush()
        await asyncio.sleep(TICK_S)


@dataclass(frozen=True)
class Crash:
    submitted: int  # records handed to submit() before the kill
    durable: int  # of those, the writer had reported stored (committed or spooled) by the kill
    survived: list[str]  # request ids found after recovery (a replay of the spool into ``recover_url``)

    @property
    def lost(self) -> int:
        return self.submitted - len(self.survived)


def crash_once(
    url: str,
    recover_url: str,
    spool_dir: Path,
    *,
    rate: float,
    flush_interval_s: float,
    batch_size: int,
    kill_after_s: float,
) -> Crash:
    """Run the child until it SIGKILLs itself, then recover (replay its spool) and list what survived."""
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "tests.logstore.crash_child", "--url", url, "--spool-dir", str(spool_dir)]
    command += ["--rate", str(rate), "--flush-interval", str(flush_interval_s), "--batch-size", str(batch_size)]
    command += ["--kill-after", str(kill_after_s)]
    child = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=60)
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"crash child exited with {child.returncode}: {child.stderr[-2000:]}")
    last = child.stdout.splitlines()[-1].split()
    if last[0] != "kill":
        raise RuntimeError(f"crash child did not reach its kill point: {last}")
    submitted, durable = int(last[1]), int(last[2])

    async def recover() -> list[str]:
        writer = LogWriter(settings(recover_url, spool_dir, spool_dir=str(spool_dir)), write_timeout_s=5.0)
        await writer.start()
        await wait_until(lambda: writer.spool_records == 0, what="spool replayed after the crash")
        await writer.close()
        return await stored_ids(recover_url)

    return Crash(submitted, durable, asyncio.run(recover()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--spool-dir", required=True)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--flush-interval", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--kill-after", type=float, default=1.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
