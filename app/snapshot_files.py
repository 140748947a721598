"""The workers' snapshot files: how one scrape reports totals over every worker process.

A scrape reaches whichever worker the kernel picks, yet must report totals over all of them, with
counters that never go backwards. Each worker writes its :class:`~app.tally.Tally` snapshot to its
own file in a directory that ``serve`` shares with the workers (once a second, and before it answers
a scrape); a scrape merges every worker's file (:func:`app.tally.merge`). A dead worker's file
stays, so its counts do too; its gauges drop out.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Final, final

from app.tally import Merged, Tally, merge

SHARED_DIR_ENV: Final = "WARPZIP_METRICS_DIR"


def use_shared_directory(path: Path) -> None:
    """Workers started from now on (this process included) publish their snapshots under ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.*"):
        stale.unlink()
    os.environ[SHARED_DIR_ENV] = str(path)


@final
class SnapshotFiles:
    """This worker's file in the shared directory, if ``serve`` set one up (else it keeps to itself)."""

    def __init__(self) -> None:
        shared = os.environ.get(SHARED_DIR_ENV)
        self.directory = Path(shared) if shared else None

    def publish(self, tally: Tally, name: str | None = None) -> None:
        """Replace this worker's file (or the file ``name``) with the current figures (atomically:
        readers see old or new)."""
        if self.directory is None:
            return
        target = self.directory / f"{name or f'worker-{os.getpid()}'}.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(tally.snapshot(os.getpid())))
        os.replace(tmp, target)

    def merged(self, tally: Tally) -> Merged:
        """Every worker's figures combined (just ``tally``, this worker's, without a shared directory)."""
        if self.directory is None:
            return merge([tally.snapshot(os.getpid())], {os.getpid()})
        snapshots: list[dict[str, Any]] = []
        for path in self.directory.glob("*.json"):
            try:
                snapshots.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a worker is replacing its file right now; it is at most a second old
        return merge(snapshots, {s["pid"] for s in snapshots if _alive(s["pid"])})


@final
class Restarts:
    """The parent's restart counts (workers, the embedded device), published beside the workers'
    snapshots: the parent serves no scrape, so a scrape reads them from its file like a worker's."""

    def __init__(self) -> None:
        self._tally = Tally()
        self._files = SnapshotFiles()
        self._lock = threading.Lock()  # the device supervisor's thread and the worker pool count
        for what in ("worker", "device"):
            self._tally.add(f"warpzip_{what}_restarts", (), 0)  # the series exist from the start
        self._files.publish(self._tally, "supervisor")

    def count(self, what: str) -> None:
        """One more restart of ``what`` ("worker" or "device")."""
        with self._lock:
            self._tally.add(f"warpzip_{what}_restarts", ())
            self._files.publish(self._tally, "supervisor")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
