"""The afbackup agent: runs INSIDE the Airflow interpreter (locally or in the scheduler pod).

This file is sent as source code over the executor's stdin and executed by the
Python that runs Airflow, so it must stand alone: standard library plus
Airflow, no afbackup imports, Python >= 3.8 syntax.

Why an agent instead of three ``airflow … export -`` commands:
- Airflow prints log lines and messages on stdout around exports (and ``pools
  export -`` writes a file named ``-``), so stdout is never trusted: fd 1 is
  pointed at stderr before Airflow is imported, and the only thing written to
  the real stdout is one framed, checksummed reply.
- One interpreter runs every command through Airflow's own CLI parser:
  Airflow's start-up (about 1.5 s of CPU) is paid once, not three times.
- Exports go to a private 0700 directory on a memory-backed filesystem and
  are removed on every path (they hold plaintext credentials).

Protocol (stdin): ``<n>\\n<n bytes of this source>`` (read by the bootstrap),
then ``<m>\\n<m bytes of JSON request>``. stdin is never read to EOF, so the
Kubernetes exec v4 protocol (no half-close) works. Reply (stdout):
``AFBACKUP-AGENT/1 <length> <sha256>\\n<JSON>``.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import traceback

MAGIC = b"AFBACKUP-AGENT/1"
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")
EXPORTS = (
    ("connections", "connections.json"),
    ("variables", "variables.json"),
    ("pools", "pools.json"),
)


def _read_request():
    size = int(sys.stdin.buffer.readline())
    return json.loads(sys.stdin.buffer.read(size).decode("utf-8"))


def _reply(fd, payload):
    data = json.dumps(payload, sort_keys=True).encode("utf-8")
    header = b"%s %d %s\n" % (MAGIC, len(data), hashlib.sha256(data).hexdigest().encode("ascii"))
    with os.fdopen(fd, "wb") as out:
        out.write(header + data)
        out.flush()


def _fstype(path):
    """The filesystem type holding ``path``, from /proc/self/mounts (longest mount prefix)."""
    best, fstype = "", "unknown"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                mount = fields[1].replace("\\040", " ")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, fstype = mount, fields[2]
    except OSError:
        pass
    return fstype


@contextlib.contextmanager
def _private_dir(base):
    fstype = _fstype(base)
    if fstype not in MEMORY_FILESYSTEMS:
        raise RuntimeError(
            "export directory %s is on %s, not a memory-backed filesystem; "
            "set [airflow] tmp_dir to a tmpfs (e.g. /dev/shm or a memory emptyDir)" % (base, fstype)
        )
    path = tempfile.mkdtemp(prefix="afbackup-", dir=base)
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run_cli(argv, capture_dir=None):
    """Run one Airflow CLI command in-process; return (exit code, its stdout if captured).

    Without ``capture_dir`` its output goes to stderr (fd 1 points there). With
    it, stdout is a real file in that directory: some commands need
    ``sys.stdout.fileno()``, which an in-memory buffer does not have.
    """
    from airflow.cli import cli_parser

    code = 0
    with contextlib.ExitStack() as stack:
        if capture_dir:
            sink = stack.enter_context(tempfile.TemporaryFile(mode="w+", dir=capture_dir, encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(sink))
        try:
            args = cli_parser.get_parser().parse_args(argv)
            args.func(args)
        except SystemExit as exc:
            if isinstance(exc.code, int):
                code = exc.code
            elif exc.code:
                print(exc.code, file=sys.stderr)
                code = 1
        sys.stdout.flush()
        if not capture_dir:
            return code, ""
        sink.seek(0)
        return code, sink.read()


def op_info(request):
    import airflow
    from airflow.configuration import conf

    keys = [key.strip() for key in (conf.get("core", "fernet_key", fallback="") or "").split(",") if key.strip()]
    env = os.environ
    return {
        "airflow_version": airflow.__version__,
        "python_version": sys.version.split()[0],
        "fernet_fingerprints": [hashlib.sha256(key.encode()).hexdigest()[:16] for key in keys],
        "env_connections": sorted(k[len("AIRFLOW_CONN_"):].lower() for k in env if k.startswith("AIRFLOW_CONN_")),
        "env_variables": sorted(k[len("AIRFLOW_VAR_"):].lower() for k in env if k.startswith("AIRFLOW_VAR_")),
        "secrets_backend": conf.get("secrets", "backend", fallback="") or "",
    }


def _exact_variables():
    """Variable values exactly as stored (decrypted), with descriptions: the lossless copy."""
    from sqlalchemy import select

    from airflow.models import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            var.key: {"val": var.val, "description": var.description}
            for var in session.scalars(select(Variable).order_by(Variable.key))
        }


def op_export(request):
    """Export connections, variables and pools through the CLI into a private tmpfs dir."""
    from airflow.configuration import conf

    files = {}
    with _private_dir(request.get("tmp_dir") or "/dev/shm") as workdir:
        for kind, name in EXPORTS:
            path = os.path.join(workdir, name)
            code, _ = _run_cli([kind, "export", path])
            if code != 0 or not os.path.exists(path):
                raise RuntimeError("airflow %s export failed (exit %s); see stderr" % (kind, code))
            with open(path, "rb") as fh:
                files[name] = fh.read().decode("utf-8")
            os.unlink(path)
    result = {"files": files, "variables_exact": _exact_variables()}
    if request.get("include_fernet_keys"):
        result["fernet_keys"] = [
            key.strip() for key in (conf.get("core", "fernet_key", fallback="") or "").split(",") if key.strip()
        ]
    return result


def op_cli(request):
    code, out = _run_cli(list(request["argv"]), capture_dir=request.get("tmp_dir") or tempfile.gettempdir())
    return {"exit_code": code, "stdout": out}


OPERATIONS = {"info": op_info, "export": op_export, "cli": op_cli}


def main():
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # everything Airflow prints goes to stderr; only our reply uses reply_fd
    os.umask(0o077)
    request = _read_request()
    for key, value in (request.get("env") or {}).items():
        os.environ[key] = value
    results = []
    for operation in request["ops"]:
        try:
            results.append({"ok": True, "result": OPERATIONS[operation["op"]](operation)})
        except Exception as exc:  # reported to the caller, who decides
            traceback.print_exc(file=sys.stderr)
            results.append({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)})
            if not request.get("keep_going"):
                break
    _reply(reply_fd, {"results": results})


main()
