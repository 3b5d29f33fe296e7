"""Leak checks for pipeline tests: no thread and no child process may outlive the work that started it."""

from __future__ import annotations

import dataclasses
import threading
import time

import psutil
import pytest

SETTLE = 10.0  # seconds finished work gets for its threads and children to be gone (joined, reaped)


@dataclasses.dataclass
class Leaks:
    """Threads and child processes that exist now; ``assert_none_new`` fails on any that outlive a pipeline."""

    threads: set[threading.Thread]
    children: set[int]

    @classmethod
    def snapshot(cls) -> Leaks:
        return cls(set(threading.enumerate()), {p.pid for p in psutil.Process().children(recursive=True)})

    def new(self) -> tuple[list[str], list[str]]:
        threads = [t.name for t in threading.enumerate() if t not in self.threads and t.is_alive()]
        children = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.pid not in self.children and proc.status() != psutil.STATUS_ZOMBIE:
                    children.append(f"{proc.pid} {' '.join(proc.cmdline())}")
            except psutil.NoSuchProcess:
                continue
        return threads, children

    def assert_none_new(self) -> None:
        deadline = time.monotonic() + SETTLE
        while True:
            threads, children = self.new()
            if not threads and not children:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"left behind: threads {threads}, child processes {children}")
            time.sleep(0.02)
