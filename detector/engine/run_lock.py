"""One run per run directory: ``RunLock(run_dir).acquire()`` holds ``run_dir/.lock`` until ``release()``.

The lock is an exclusive ``flock`` on the file (the kernel drops it when the process dies, however it dies),
and while held the file names its holder (pid, host, start time, command line) so a second run can say which run is
using the folder. A lock file left by a killed run is no longer locked: the next run takes it over and says
so. Where ``flock`` does not exist (Windows) the holder's pid is checked instead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from detector.errors import DetectorError

LOGGER = logging.getLogger("detector")
LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunDirBusy(DetectorError):
    """Another live run holds the directory."""


class RunLock:
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise ``RunDirBusy`` naming the run that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        holder = read_holder(fd)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunDirBusy(busy_message(self.path.parent, holder)) from None
        elif holder and pid_alive(int(holder.get("pid", -1))) and holder.get("host") == socket.gethostname():
            os.close(fd)
            raise RunDirBusy(busy_message(self.path.parent, holder))
        if holder:
            LOGGER.warning(
                f"{self.path.parent}: taking over the lock of run pid {holder.get('pid')} "
                f"(started {holder.get('started', '?')}), which is no longer running"
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file and unlock (a no-op when not held). The file stays: unlinking it while another
        process has it open would let two runs lock two different files of the same name."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_holder(fd: int) -> dict:
    """The holder record written in the lock file, or ``{}`` (empty or unreadable)."""
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data.decode()) if data else {}
    except (OSError, ValueError):
        return {}


def busy_message(run_dir: Path, holder: dict) -> str:
    who = f"run pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
    command = holder.get("command")
    return (
        f"{run_dir} is in use by another {who}" + (f" ({command})" if command else "") + "; two runs in one folder "
        "would overwrite each other's results and weights: wait for it, or choose another name= (or exist_ok=False)"
    )


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
