"""Which other processes hold a file open: decides rename versus copy-truncate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def open_holders(path: Path) -> set[int] | None:
    """Pids of other processes holding ``path`` open; ``None`` when it cannot be known.

    Linux: scan ``/proc/<pid>/fd``.  A process whose fds we may not read (another
    user's) makes the answer unknown.  Elsewhere (macOS, BSD): ask ``lsof -t``,
    which ships with macOS; without a usable lsof the answer is unknown.
    Callers treat unknown as "held" (copy-truncate), see docs/log-rotation.md.
    """
    try:
        target = os.stat(path)
    except FileNotFoundError:
        return set()
    me = os.getpid()
    if os.path.isdir("/proc/self/fd"):
        holders: set[int] = set()
        unknown = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            fd_dir = f"/proc/{entry}/fd"
            try:
                fds = os.listdir(fd_dir)
            except FileNotFoundError:
                continue  # the process ended meanwhile
            except PermissionError:
                unknown = True
                continue
            for fd in fds:
                try:
                    info = os.stat(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if info.st_ino == target.st_ino and info.st_dev == target.st_dev:
                    holders.add(int(entry))
                    break
        return None if unknown and not holders else holders
    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    import subprocess  # loaded when the job runs, not when the daemon reads its options

    try:
        result = subprocess.run([lsof, "-t", "--", os.fspath(path)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # lsof exits 1 with empty output when nobody holds the file.
    if result.returncode not in (0, 1) or (result.returncode == 1 and result.stdout.strip()):
        return None
    return {int(pid) for pid in result.stdout.split() if pid.isdigit() and int(pid) != me}
