"""Run directories (../shared/DESIGN.md section 3): every file written atomically.

``<output_dir>/``: ``run.yaml``, ``composition.json``, ``metrics.json``, ``confusion.npz``,
``log.jsonl``, ``checkpoints/{last,best}.pt``, ``status`` (``running|done|failed`` + reason).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from proveseg import __version__
from proveseg.atomic import atomic_write_json, atomic_write_text, finite_json

__all__ = ["LOCKED_EXIT", "LOCK_FD_ENV", "STATUSES", "RunDir", "RunLock", "RunLocked", "code_version", "file_sha256",
           "read_log_lines"]

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
        self.opened = False  # set by the trainer once it owns this run's files (status, log, run.yaml)

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
        """Write ``status`` atomically; on a full disk, overwrite the existing file in place as a last resort."""
        if state not in STATUSES:
            raise ValueError(f"status {state!r} not in {STATUSES}")
        text = f"{state}\n{reason}\n" if reason else f"{state}\n"
        try:
            atomic_write_text(self.root / "status", text)
        except OSError:
            # a full disk refuses the temp file; the old status file's block may still take a short text
            fd = os.open(self.root / "status", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, text.encode()[:4000])
            finally:
                os.close(fd)

    def remove_stale_temp_files(self) -> int:
        """Delete temp files a killed writer left (``.<name>.*.tmp``); the caller holds the run's lock."""
        stale = [p for folder in (self.root, self.checkpoints) if folder.is_dir()
                 for p in folder.glob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def read_log(self) -> list[dict[str, Any]]:
        """The log's records; a torn last line (a write cut by a full disk or a kill) is skipped, not fatal."""
        return read_log_lines(self.log_path)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.root / name, obj)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.root / name, text)

    def log(self, record: dict[str, Any]) -> None:
        """Append one strict-JSON line (NaN written as null) and fsync it; a reader skips a torn last line."""
        line = json.dumps(finite_json(record), sort_keys=True, allow_nan=False) + "\n"
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_log(self, iteration: int) -> None:
        """On resume, drop log lines after the checkpoint's iteration (they will be written again), and a torn one."""
        if not self.log_path.exists():
            return
        keep = [r for r in read_log_lines(self.log_path) if r.get("iteration", 0) <= iteration]
        atomic_write_text(self.log_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def read_log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a ``log.jsonl``. The last line may be torn (cut mid-write) and is then skipped; a bad
    line before it is an error naming the file and line."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if all(not rest.strip() for rest in lines[n:]):  # the last line: a write that never finished
                break
            raise ValueError(f"{path}: line {n} is not JSON ({exc.msg})") from None
        if isinstance(record, dict):
            out.append(record)
    return out


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes: ``metrics.json`` names the weights it scored by it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
