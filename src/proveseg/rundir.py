"""Run directories (../shared/DESIGN.md section 3): every file written atomically.

``<output_dir>/``: ``run.yaml``, ``composition.json``, ``metrics.json``, ``confusion.npz``,
``log.jsonl``, ``checkpoints/{last,best}.pt``, ``status`` (``running|done|failed`` + reason).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from proveseg import __version__
from proveseg.atomic import atomic_write_json, atomic_write_text

__all__ = ["LOCKED_EXIT", "LOCK_FD_ENV", "STATUSES", "RunDir", "RunLock", "RunLocked", "code_version"]

STATUSES = ("running", "done", "failed")
LOCK_FD_ENV = "PROVESEG_RUN_LOCK_FD"  # an executor hands its held lock to the trainer it starts
LOCKED_EXIT = 4  # `proveseg train`'s exit code when another process holds the run directory


class RunLocked(RuntimeError):
    """Another process holds the run directory: it is training (or preparing) this run now."""


class RunLock:
    """One writer per run directory: an OS lock (``flock``) on ``<run_dir>/.lock``.

    The kernel drops the lock when the last descriptor of the holding process closes, so a crashed
    or killed process never leaves it behind. The lock file names its holder (pid@host) for the
    message a second process gets.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock now or raise RunLocked naming the holder; adopts a lock handed down by an executor."""
        if self.fd is not None:
            return self
        inherited = self._inherited()
        if inherited is not None:
            self.fd = inherited
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is held by {holder} (one writer per run directory)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def _inherited(self) -> int | None:
        value = os.environ.get(LOCK_FD_ENV, "")
        if not value.isdigit():
            return None
        try:
            same = os.fstat(int(value)).st_ino == os.stat(self.path).st_ino
        except OSError:
            return None
        return int(value) if same else None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> str | None:
        """Who holds the lock now when another process does, else None; creates nothing (``plan`` is a dry run)."""
        if self.fd is not None or not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)
        return None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def code_version() -> dict[str, str]:
    """proveseg version and, when run from a git checkout, its commit and whether it was modified."""
    out = {"proveseg": __version__}
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        out.update(git_commit=commit, git_dirty=str(bool(dirty)).lower())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


class RunDir:
    """Paths and atomic writers of one run directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.log_path = self.root / "log.jsonl"

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def status(self) -> tuple[str, str]:
        """(state, reason); ``todo`` when the run has not started."""
        path = self.root / "status"
        if not path.exists():
            return "todo", ""
        state, _, reason = path.read_text(encoding="utf-8").partition("\n")
        return state.strip(), reason.strip()

    def set_status(self, state: str, reason: str = "") -> None:
        if state not in STATUSES:
            raise ValueError(f"status {state!r} not in {STATUSES}")
        atomic_write_text(self.root / "status", f"{state}\n{reason}\n" if reason else f"{state}\n")

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.root / name, obj)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.root / name, text)

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line and fsync it (a line is either whole or absent after a crash)."""
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_log(self, iteration: int) -> None:
        """On resume, drop log lines after the checkpoint's iteration (they will be written again)."""
        if not self.log_path.exists():
            return
        keep = [ln for ln in self.log_path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("iteration", 0) <= iteration]
        atomic_write_text(self.log_path, "".join(ln + "\n" for ln in keep))
