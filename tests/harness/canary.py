"""Secret canaries: run a command and prove a secret reached neither logs, argv nor disk.

``run_watched`` starts the real CLI and samples the command line of it and of every
descendant (``/proc/<pid>/cmdline`` through psutil) until it exits, so a password
put on pg_restore's or gpg's argv, even for a moment, is caught by the sampler
(a process that lives less than one poll interval can slip through: the poll is
every 5 ms). ``files_containing`` scans directory trees for the secret's bytes.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil


@dataclasses.dataclass
class Watched:
    """A finished command: its outcome and every command line seen while it ran."""

    done: subprocess.CompletedProcess
    cmdlines: set[str]

    def leaks(self, secret: str) -> list[str]:
        """Where ``secret`` showed up: 'stdout', 'stderr', or 'argv: <command line>'."""
        found = [name for name, text in (("stdout", self.done.stdout), ("stderr", self.done.stderr))
                 if secret in text]
        return found + [f"argv: {line}" for line in sorted(self.cmdlines) if secret in line]


def _sample(pid: int, seen: set[str], stop: threading.Event) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            try:
                seen.add(" ".join(proc.cmdline()))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        stop.wait(0.005)


def run_watched(argv: Sequence[str], *, env: dict[str, str], cwd: str | Path, timeout: float = 600,
                stdin: str | None = None) -> Watched:
    """Run ``argv`` (text mode, output captured) while sampling every descendant's command line."""
    seen: set[str] = set()
    stop = threading.Event()
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(cwd))
    sampler = threading.Thread(target=_sample, args=(proc.pid, seen, stop), daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    finally:
        stop.set()
        sampler.join(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Watched(subprocess.CompletedProcess(list(argv), proc.returncode, out, err), seen)


def files_containing(secret: str, roots: Iterable[Path], exclude: Iterable[Path] = ()) -> list[Path]:
    """Every regular file under ``roots`` (not under ``exclude``) whose bytes contain ``secret``."""
    needle, skipped = secret.encode(), [Path(p).resolve() for p in exclude]
    hits = []
    for root in roots:
        for path in Path(root).rglob("*"):
            resolved = path.resolve()
            if any(resolved == skip or skip in resolved.parents for skip in skipped):
                continue
            try:
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    hits.append(path)
            except OSError:
                continue
    return hits
