"""Starting, watching and stopping the processes under test.

Every server is started in a session of its own (``start_new_session``) and
stopped by its process-group id, SIGTERM then SIGKILL, from ``finally``
blocks. A sampler thread reads ``/proc`` every 100 ms: resident memory
(``VmRSS``) summed over a server's process tree, for the peak; CPU time
(``utime + stime``) is read around each phase.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.1


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(c) for c in fh.read().split())
    except OSError:
        pass
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` (their own, not their dead children's)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / CLOCK_TICKS


def postgres_pids() -> list[int]:
    """Every process named ``postgres`` (the database's CPU, read only)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


class Server:
    """A server subprocess: started, waited for, measured, stopped."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        ready_path: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._peak = 0
        self._overall_peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until ``ready_path`` answers 200."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)
        self.starts += 1
        self._stop = threading.Event()
        self._sampler = threading.Thread(
            target=self._sample, args=(self._stop,), name=f"rss-{self.name}", daemon=True
        )
        self._sampler.start()

    def restart(self, timeout: float = 60.0) -> None:
        """Start the server again after it exited (or was killed from outside)."""
        self.stop()
        self.start(timeout)

    def _sample(self, stop: threading.Event) -> None:
        while not stop.wait(SAMPLE_INTERVAL):
            if self.proc is None or self.proc.poll() is not None:
                return
            rss = rss_bytes(process_tree(self.proc.pid))
            with self._lock:
                self._peak = max(self._peak, rss)
                self._overall_peak = max(self._overall_peak, rss)

    def reset_peak(self) -> None:
        """Start a new peak-RSS window (one per phase), from the current RSS."""
        current = rss_bytes(process_tree(self.pid))
        with self._lock:
            self._peak = current
            self._overall_peak = max(self._overall_peak, current)

    def peak_rss_mb(self) -> float:
        """Peak RSS since :meth:`reset_peak`, in MiB."""
        current = rss_bytes(process_tree(self.pid))
        with self._lock:
            self._peak = max(self._peak, current)
            return self._peak / 2**20

    def overall_peak_rss_mb(self) -> float:
        with self._lock:
            return self._overall_peak / 2**20

    def cpu_seconds(self) -> float:
        return cpu_seconds(process_tree(self.pid))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 10 s; never raises."""
        self._stop.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


@contextlib.contextmanager
def running(server: Server, timeout: float = 60.0) -> Iterator[Server]:
    """``server`` started for the duration of the block, stopped whatever happens."""
    try:
        server.start(timeout)
        yield server
    finally:
        server.stop()
