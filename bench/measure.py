"""Measuring a command: wall time, and peak RSS of the process and of its whole tree.

The process's own peak is the kernel's high-water mark (``VmHWM`` in
/proc/PID/status), sampled until it exits, so a short spike between samples
is not missed. The tree's peak is the largest sum of RSS over the process
and its descendants seen at any sample (every 20 ms).
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from collections.abc import Sequence

import psutil

SAMPLE_SECONDS = 0.02


@dataclasses.dataclass
class Measurement:
    name: str
    seconds: float
    returncode: int
    own_peak_rss: int = 0  # bytes
    tree_peak_rss: int = 0  # bytes
    stdout: str = ""
    stderr: str = ""

    @property
    def own_mib(self) -> float:
        return self.own_peak_rss / 2**20

    @property
    def tree_mib(self) -> float:
        return self.tree_peak_rss / 2**20


def _hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _sample(proc: psutil.Process, result: Measurement, done: threading.Event) -> None:
    while not done.is_set():
        result.own_peak_rss = max(result.own_peak_rss, _hwm(proc.pid))
        try:
            members = [proc] + proc.children(recursive=True)
            total = sum(p.memory_info().rss for p in members if p.is_running())
        except psutil.Error:
            total = 0
        result.tree_peak_rss = max(result.tree_peak_rss, total)
        time.sleep(SAMPLE_SECONDS)


def run_measured(name: str, argv: Sequence[str], *, env=None, cwd=None, shell: bool = False) -> Measurement:
    """Run ``argv`` to completion, measuring it; output is captured (stderr kept for errors)."""
    started = time.monotonic()
    popen = subprocess.Popen(argv if not shell else ["bash", "-c", argv[0]], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    result = Measurement(name, 0.0, 0)
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(psutil.Process(popen.pid), result, done), daemon=True)
    sampler.start()
    result.stdout, result.stderr = popen.communicate()
    result.seconds = time.monotonic() - started
    done.set()
    sampler.join()
    result.returncode = popen.returncode
    return result


def time_command(name: str, script: str, *, env=None, cwd=None) -> Measurement:
    """A bash script, timed (no RSS needed)."""
    return run_measured(name, [script], env=env, cwd=cwd, shell=True)
