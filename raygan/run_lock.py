"""One writer per run: a lease file in a run's (or a sweep's) folder, so two commands never write one run at once.

    with RunLock(storage.join(root, name), "--name", "raygan train"):
        fit(cfg, name, root)

The lock is `.raygan-lock.json` in the folder, local or in object storage, through the same storage code as
checkpoints. Acquiring writes it and reads it back after a short settle, so of two commands that start together
the later writer wins and the other refuses (an object store has no atomic create). A second command finds
it held and stops with a UserError naming the holder. A holder that died cannot keep the run: on its own host
its process is gone (pid and start time), from another host its heartbeat, rewritten every HEARTBEAT_S, is
older than LEASE_S.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow.fs

from raygan import storage
from raygan.errors import UserError

LOCK = ".raygan-lock.json"
HEARTBEAT_S = 15.0  # how often the holder rewrites the lock
LEASE_S = 60.0  # a lock from another host without a heartbeat for this long is stale
SETTLE_S = {"local": 0.05, "remote": 1.0}  # between writing the lock and reading it back: > one check-to-write gap


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the holder."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def is_alive(holder: dict, now: float, modified: float | None) -> bool:
    """Whether the command that wrote `holder` may still be writing: on this host its process is running, from
    another its last heartbeat (the lock's modification time, else the time it wrote) is within the lease."""
    if holder.get("host") == socket.gethostname():
        pid = holder.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process exists
            pass
        started = process_start(pid)
        return started is None or holder.get("process_start") in (None, started)
    heartbeat = modified if modified is not None else holder.get("heartbeat", 0.0)
    return now - heartbeat < LEASE_S


def describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return (
        f"{holder.get('command', 'a raygan command')} (pid {holder.get('pid')} on {holder.get('host')}, since {since})"
    )


class RunLock:
    """A lease on `folder` for this process; `what` names the folder in errors (`--name`)."""

    def __init__(self, folder: str, what: str, command: str):
        self.folder, self.what, self.command = folder, what, command
        self.uri = storage.join(folder, LOCK)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.since: float | None = None  # when this command took the lock; kept by every heartbeat
        self.lost = False  # another command took the lock over (it found ours stale)
        self._created: list[Path] = []  # local folders the lock made, deepest first: removed again if left empty

    def __enter__(self) -> RunLock:
        self.acquire()
        self._heartbeat = threading.Thread(target=self._beat, name="raygan-run-lock", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        self.release()

    def _read(self) -> tuple[dict | None, float | None]:
        """(the lock's holder, its modification time in seconds) or (None, None) when there is none."""
        fs, path = storage.filesystem(self.uri)
        info = fs.get_file_info(path)
        if info.type != pyarrow.fs.FileType.File:
            return None, None
        with fs.open_input_stream(path) as stream:  # one lookup, not read_bytes' second one
            data = stream.read()
        try:
            holder = json.loads(data)
        except ValueError:  # cut short by a full disk or a kill: nobody's lock
            return None, None
        modified = info.mtime.timestamp() if info.mtime is not None else None
        return (holder if isinstance(holder, dict) else None), modified

    def _refuse(self, holder: dict) -> UserError:
        return UserError(
            f"{self.what}: {self.folder} is being written by {describe(holder)}; two commands never write one run "
            "at once: wait for it to finish or stop it"
        )

    def _write(self, since: float) -> None:
        pid = os.getpid()
        holder = {
            "token": self.token,
            "command": self.command,
            "host": socket.gethostname(),
            "pid": pid,
            "process_start": process_start(pid),
            "since": since,
            "heartbeat": time.time(),
        }
        storage.write_bytes(self.uri, json.dumps(holder).encode())

    def acquire(self) -> None:
        holder, modified = self._read()
        if holder is not None and holder.get("token") != self.token and is_alive(holder, time.time(), modified):
            raise self._refuse(holder)
        self.since = time.time()
        if not storage.is_uri(self.folder):
            missing = Path(self.folder)
            while not missing.exists():
                self._created.append(missing)
                missing = missing.parent
        self._write(self.since)
        time.sleep(SETTLE_S["remote" if storage.is_uri(self.uri) else "local"])
        holder, _ = self._read()
        if holder is not None and holder.get("token") != self.token:  # another command wrote after us
            raise self._refuse(holder)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder, _ = self._read()
                if holder is not None and holder.get("token") != self.token:
                    if not self.lost:
                        print(
                            f"warning: {self.what}: {self.folder} was taken over by {describe(holder)}", file=sys.stderr
                        )
                    self.lost = True
                    continue
                self._write(self.since)
            except (OSError, storage.StorageFull):  # unreachable or full: the next beat tries again, within the lease
                pass

    def release(self) -> None:
        try:
            holder, _ = self._read()
            if holder is not None and holder.get("token") == self.token:
                fs, path = storage.filesystem(self.uri)
                fs.delete_file(path)
        except OSError:  # unreachable storage: the lease runs out on its own
            pass
        for folder in self._created:  # a command refused as bad input after the lock leaves nothing behind
            try:
                folder.rmdir()
            except OSError:  # holds the run's files
                break
