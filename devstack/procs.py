"""Process bookkeeping from /proc (Linux only, no dependencies).

devstack runs every step in its own process group inside the server's session,
so "everything devstack started" is exactly "every live process whose session
id is the server's pid". Zombies are dead (only their exit status is left) and
are ignored: orphans are reparented to PID 1, which may not reap promptly.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgrp, session) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[3])


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _live_where(index: int, value: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat and stat[0] not in ("Z", "X") and stat[index] == value:
                pids.append(int(entry.name))
    return sorted(pids)


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group."""
    return _live_where(1, pgid)


def session_pids(sid: int) -> list[int]:
    """Live processes of a session."""
    return _live_where(2, sid)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(members: Callable[[], list[int]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not members():
            return True
        time.sleep(0.05)
    return not members()


def terminate_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM a process group, SIGKILL what is left after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _wait_gone(lambda: group_pids(pgid), grace):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _wait_gone(lambda: group_pids(pgid), 5.0)


def kill_session(sid: int, only_under: Path | None = None) -> list[int]:
    """SIGKILL every live process of a session (only those whose working
    directory is under ``only_under``, if given); return those still alive."""

    def members() -> list[int]:
        pids = session_pids(sid)
        if only_under is None:
            return pids
        return [p for p in pids if (d := cwd(p)) is not None and d.is_relative_to(only_under)]

    _signal_all(members(), signal.SIGKILL)
    _wait_gone(members, 5.0)
    return members()


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (VmRSS from /proc), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS's pick): for a server about to start on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
