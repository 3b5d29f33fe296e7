"""The fake exec endpoint: the websocket channel protocol in front of a subprocess.

Wire format (k8s.io/apimachinery ``remotecommand``): every binary frame starts
with one channel byte -- 0 stdin, 1 stdout, 2 stderr, 3 status (a JSON
``metav1.Status``), 4 resize; ``v5.channel.k8s.io`` adds 255, "close channel
N" (the only way to half-close stdin). The "container" is a local process run
with the argv as given. Output is forwarded chunk by chunk as the process
writes it, never buffered whole, and the status frame goes last, after every
output frame, as the kubelet does. Reading the client's frames is paced by
writes to the process's stdin, so a slow reader pushes back on the client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from aiohttp import WSMsgType, web

CHUNK = 64 * 1024  # bytes read from the process per output frame
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclasses.dataclass
class ExecRecord:
    """One exec call as the fake saw it, for assertions (byte counts, not data)."""

    pod: str
    container: str
    command: list[str]
    protocol: str
    stdin: bool
    stdin_bytes: int = 0
    stdin_closed: bool = False
    returncode: int | None = None


def success_status() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int) -> dict[str, Any]:
    """The status the kubelet sends when the command exits non-zero."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def missing_command_status(program: str) -> dict[str, Any]:
    """What containerd + kubelet answer when the executable is not in the image."""
    cause = (
        'error executing command in container: failed to exec in container: failed to start '
        'exec: OCI runtime exec failed: exec failed: unable to start container process: '
        f'exec: "{program}": executable file not found in $PATH: unknown'
    )
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }


async def run_exec(request: web.Request, ws: web.WebSocketResponse, pod: Any,
                   record: ExecRecord, faults: Any, procs: set) -> None:
    """Serve one upgraded exec session until the command ends (or the client leaves)."""
    if faults.hang:
        await _read_client(ws, record, None)
        return
    proc = await _spawn(pod, record)
    if proc is None:
        await _send_status(ws, missing_command_status(record.command[0]))
        await ws.close()
        return
    procs.add(proc)
    reader = asyncio.create_task(_read_client(ws, record, proc))
    try:
        await asyncio.gather(_pump(proc.stdout, STDOUT, ws), _pump(proc.stderr, STDERR, ws))
        code = await proc.wait()
        record.returncode = 128 - code if code < 0 else code
        await _finish(request, ws, faults, record.returncode)
    except ConnectionError:
        pass  # the client went away; the finally clause cleans up
    finally:
        reader.cancel()
        await _reap(proc)
        procs.discard(proc)


async def _spawn(pod: Any, record: ExecRecord) -> asyncio.subprocess.Process | None:
    """Start the command like a container runtime would; None if it is not there."""
    try:
        return await asyncio.create_subprocess_exec(
            *record.command,
            stdin=asyncio.subprocess.PIPE if record.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=pod.cwd,
            env=pod.environment(),
        )
    except (FileNotFoundError, PermissionError):
        return None


async def _pump(stream: asyncio.StreamReader, channel: int, ws: web.WebSocketResponse) -> None:
    """Forward one output pipe to its channel as the process writes it."""
    prefix = bytes([channel])
    while chunk := await stream.read(CHUNK):
        await ws.send_bytes(prefix + chunk)


async def _read_client(ws: web.WebSocketResponse, record: ExecRecord, proc) -> None:
    """Take stdin and v5 close frames from the client; kill the command if it leaves."""
    async for msg in ws:
        if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not msg.data:
            continue
        data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
        channel, payload = data[0], data[1:]
        if channel == STDIN:
            await _write_stdin(proc, record, payload)
        elif channel == CLOSE and payload[:1] == bytes([STDIN]):
            record.stdin_closed = True
            if proc is not None and proc.stdin is not None:
                proc.stdin.close()
    if proc is not None and proc.returncode is None:
        proc.kill()


async def _write_stdin(proc, record: ExecRecord, payload: bytes) -> None:
    record.stdin_bytes += len(payload)
    if proc is None or proc.stdin is None or proc.stdin.is_closing():
        return
    try:
        proc.stdin.write(payload)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command stopped reading; like the kubelet, drop the rest


async def _finish(request: web.Request, ws: web.WebSocketResponse, faults: Any, code: int) -> None:
    """Send the exit status and close -- or drop the connection first (fault mode)."""
    if faults.drop_before_status:
        if faults.drop_abruptly and request.transport is not None:
            request.transport.abort()
        else:
            await ws.close()
        return
    await _send_status(ws, success_status() if code == 0 else exit_status(code))
    await ws.close()


async def _send_status(ws: web.WebSocketResponse, status: dict[str, Any]) -> None:
    await ws.send_bytes(bytes([STATUS]) + json.dumps(status).encode())


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
