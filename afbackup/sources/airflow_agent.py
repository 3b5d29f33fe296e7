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

Protocol (stdin): ``<n>\\n<n bytes of this source>`` (read by the bootstrap, which runs it as
``__main__``; importing this module runs nothing),
then ``<m>\\n<m bytes of JSON request>``. stdin is never read to EOF, so the
Kubernetes exec v4 protocol (no half-close) works. Reply (stdout):
``AFBACKUP-AGENT/1 <length> <sha256>\\n<JSON>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import traceback
from typing import TYPE_CHECKING, Any, Iterator

# Run as the agent, these are defined by the parts sent before this one (AGENT_PARTS in sources/airflow.py);
# imported as a module (tests, type checkers), they come from those parts' modules.
if TYPE_CHECKING or __name__ != "__main__":
    from afbackup.sources.airflow_agent_db import _point_at, _read_in_snapshot
    from afbackup.sources.airflow_agent_env import (
        _alembic_revisions,
        _environment_or_error,
        _read_triggers,
        _trigger_digests,
        op_environment,
    )

MAGIC = b"AFBACKUP-AGENT/1"
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")
EXPORTS = (
    ("connections", "connections.json"),
    ("variables", "variables.json"),
    ("pools", "pools.json"),
)


def _read_request() -> dict[str, Any]:
    size = int(sys.stdin.buffer.readline())
    return json.loads(sys.stdin.buffer.read(size).decode("utf-8"))


def _reply(fd: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload, sort_keys=True).encode("utf-8")
    header = b"%s %d %s\n" % (MAGIC, len(data), hashlib.sha256(data).hexdigest().encode("ascii"))
    with os.fdopen(fd, "wb") as out:
        out.write(header + data)
        out.flush()


def _fstype(path: str) -> str:
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
def _private_dir(base: str) -> Iterator[str]:
    fstype = _fstype(base)
    if fstype not in MEMORY_FILESYSTEMS:
        raise RuntimeError(
            f"export directory {base} is on {fstype}, not a memory-backed filesystem; "
            "set [airflow] tmp_dir to a tmpfs (e.g. /dev/shm or a memory emptyDir)"
        )
    path = tempfile.mkdtemp(prefix="afbackup-", dir=base)
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


_PARSER: list[Any] = []


def _parser() -> Any:
    """Airflow's CLI parser, built once per agent run (building it is not free)."""
    if not _PARSER:
        from airflow.cli import cli_parser

        _PARSER.append(cli_parser.get_parser())
    return _PARSER[0]


def _run_cli(argv: list[str], capture_dir: str | None = None) -> tuple[int, str]:
    """Run one Airflow CLI command in-process; return (exit code, its stdout if captured).

    Without ``capture_dir`` its output goes to stderr (fd 1 points there). With
    it, stdout is a real file in that directory: some commands need
    ``sys.stdout.fileno()``, which an in-memory buffer does not have.
    """
    code = 0
    with contextlib.ExitStack() as stack:
        if capture_dir:
            sink = stack.enter_context(tempfile.TemporaryFile(mode="w+", dir=capture_dir, encoding="utf-8"))
            stack.enter_context(contextlib.redirect_stdout(sink))
        try:
            args = _parser().parse_args(argv)
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


def op_info(request: dict[str, Any]) -> dict[str, Any]:
    import airflow
    from airflow.configuration import conf

    keys = _fernet_keys()
    env = os.environ
    return {
        "airflow_version": airflow.__version__,
        "python_version": sys.version.split()[0],
        "fernet_fingerprints": [hashlib.sha256(key.encode()).hexdigest()[:16] for key in keys],
        "env_connections": sorted(k[len("AIRFLOW_CONN_"):].lower() for k in env if k.startswith("AIRFLOW_CONN_")),
        "env_variables": sorted(k[len("AIRFLOW_VAR_"):].lower() for k in env if k.startswith("AIRFLOW_VAR_")),
        "secrets_backend": conf.get("secrets", "backend", fallback="") or "",
        "environment": _environment_or_error(),
    }


def _exact_variables() -> dict[str, dict[str, Any]]:
    """Variable values exactly as stored (decrypted), with descriptions: the lossless copy."""
    from airflow.models import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return {
            var.key: {"val": var.val, "description": var.description}
            for var in session.scalars(select(Variable).order_by(Variable.key))
        }


def op_export(request: dict[str, Any]) -> dict[str, Any]:
    """Export connections, variables and pools through the CLI into a private tmpfs dir."""
    files: dict[str, str] = {}
    with _private_dir(request.get("tmp_dir") or "/dev/shm") as workdir:
        for kind, name in EXPORTS:
            path = os.path.join(workdir, name)
            code, _ = _run_cli([kind, "export", path])
            if code != 0 or not os.path.exists(path):
                raise RuntimeError(f"airflow {kind} export failed (exit {code}); see stderr")
            with open(path, "rb") as fh:
                files[name] = fh.read().decode("utf-8")
            os.unlink(path)
    result: dict[str, Any] = {"files": files, "variables_exact": _exact_variables()}
    if request.get("include_fernet_keys"):
        result["fernet_keys"] = _fernet_keys()
    return result


def _reset_fernet() -> None:
    """Forget the cached Fernet object (3.x: functools.cache; 2.x: a module global)."""
    from airflow.models import crypto

    if hasattr(crypto.get_fernet, "cache_clear"):
        crypto.get_fernet.cache_clear()
    if hasattr(crypto, "_fernet"):
        crypto._fernet = None


def _fernet_keys() -> list[str]:
    from airflow.configuration import conf

    return [key.strip() for key in (conf.get("core", "fernet_key", fallback="") or "").split(",") if key.strip()]


def op_schema(request: dict[str, Any]) -> dict[str, Any]:
    """The alembic head this Airflow ships, every revision it knows, and its Fernet keys' fingerprints. The
    migrations are read from the package (where Airflow's alembic config points): no database nor ORM needed."""
    import os

    import airflow
    from alembic.script import ScriptDirectory

    return {**_alembic_revisions(ScriptDirectory(os.path.join(os.path.dirname(airflow.__file__), "migrations"))),
            "fernet_fingerprints": [hashlib.sha256(key.encode()).hexdigest()[:16] for key in _fernet_keys()]}


def _read_secrets() -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, list[str]]]:
    """Decrypt every connection and variable; report what cannot be decrypted with the current keys.

    Raw columns, not ORM objects: Airflow 3 decrypts a connection while loading it,
    so one undecryptable row would abort the whole query.
    """
    from airflow.models.crypto import get_fernet
    from airflow.utils.session import create_session
    from sqlalchemy import text

    fernet = get_fernet()

    def plain(value: str | None, encrypted: bool) -> str | None:
        return fernet.decrypt(value.encode("utf-8")).decode("utf-8") if value is not None and encrypted else value

    connections: dict[str, dict[str, Any]] = {}
    variables: dict[str, Any] = {}
    broken: dict[str, list[str]] = {"connections": [], "variables": []}
    with create_session() as session:
        rows = session.execute(
            text("SELECT conn_id, password, is_encrypted, extra, is_extra_encrypted FROM connection"))
        for conn_id, password, password_encrypted, extra, extra_encrypted in rows:
            try:
                connections[conn_id] = {"password": plain(password, password_encrypted),
                                        "extra": plain(extra, extra_encrypted)}
            except Exception:
                broken["connections"].append(conn_id)
        for key, value, encrypted in session.execute(text("SELECT key, val, is_encrypted FROM variable")):
            try:
                variables[key] = plain(value, encrypted)
            except Exception:
                broken["variables"].append(key)
    return connections, variables, broken


def _read_pools() -> dict[str, dict[str, Any]]:
    from airflow.models import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return {pool.pool: {"slots": pool.slots, "description": pool.description}
                for pool in session.scalars(select(Pool))}


def op_secrets_check(request: dict[str, Any]) -> dict[str, Any]:
    """Which connections/variables fail to decrypt, and which connections/variables/pools differ from
    the expected values (names only: values never leave this process)."""
    from airflow.models.crypto import get_fernet

    connections, variables, broken = _read_secrets()
    triggers, broken["triggers"] = _read_triggers(get_fernet())
    expected = request.get("expected") or {}
    pools = _read_pools()
    differ: dict[str, list[str]] = {"connections": [], "variables": [], "pools": [], "triggers": [
        trigger_id for trigger_id, digest in (request.get("expected_triggers") or {}).items()
        if triggers.get(trigger_id) != digest]}
    for name, item in (expected.get("pools") or {}).items():
        got = pools.get(name)
        if got is None or got["slots"] != item.get("slots") or (got["description"] or "") != (
                item.get("description") or ""):
            differ["pools"].append(name)
    for conn_id, fields in (expected.get("connections") or {}).items():
        got = connections.get(conn_id)
        if got is None or got["password"] != fields.get("password") or (got["extra"] or None) != (
                fields.get("extra") or None):
            differ["connections"].append(conn_id)
    for key, value in (expected.get("variables") or {}).items():
        if variables.get(key) != value:
            differ["variables"].append(key)
    return {"undecryptable": broken, "differ": differ,
            "counts": {"connections": len(connections) + len(broken["connections"]),
                       "variables": len(variables) + len(broken["variables"]), "pools": len(pools),
                       "triggers": len(triggers) + len(broken["triggers"])}}


def _use_fernet_keys(keys: list[str]) -> None:
    """Make ``keys`` Airflow's fernet_key: its environment variable wins over every other source."""
    os.environ["AIRFLOW__CORE__FERNET_KEY"] = ",".join(keys)
    _reset_fernet()


def op_fernet_reencrypt(request: dict[str, Any]) -> dict[str, Any]:
    """Re-encrypt every encrypted value under this Airflow's key, decrypting with the source keys."""
    target = _fernet_keys()
    if not target:
        raise RuntimeError("the target Airflow has no [core] fernet_key; set one before restoring")
    saved = os.environ.get("AIRFLOW__CORE__FERNET_KEY")
    _use_fernet_keys(target + [key for key in request["source_keys"] if key not in target])
    try:
        code, _ = _run_cli(["rotate-fernet-key"])
    finally:
        if saved is None:
            os.environ.pop("AIRFLOW__CORE__FERNET_KEY", None)
        _use_fernet_keys(target)
    if code != 0:
        raise RuntimeError(f"airflow rotate-fernet-key exited with {code}")
    return {"keys_used": len(target) + len(request["source_keys"])}


def op_fernet_repair(request: dict[str, Any]) -> dict[str, Any]:
    """Check every secret decrypts under this Airflow's key; if not, re-encrypt with the source keys; check again.

    One agent run instead of three: Airflow's start-up is the expensive part.
    """
    before = op_secrets_check(request)
    broken = before["undecryptable"]
    result: dict[str, Any] = {"before": before, "reencrypted": False}
    if (broken["connections"] or broken["variables"] or broken["triggers"]) and request.get("source_keys"):
        expected_triggers = _trigger_digests(_fernet_keys() + request["source_keys"])
        op_fernet_reencrypt(request)
        result["reencrypted"] = True
        request = dict(request, expected_triggers=expected_triggers)
    result["after"] = op_secrets_check(request) if result["reencrypted"] else before
    return result


def op_import(request: dict[str, Any]) -> dict[str, bool]:
    """Import connections and pools with the CLI (overwrite), variables exactly through the ORM."""
    from airflow.models import Variable

    done: dict[str, bool] = {}
    with _private_dir(request.get("tmp_dir") or "/dev/shm") as workdir:
        for kind, argv_tail in (("connections", ["--overwrite"]), ("pools", [])):
            text = request.get(kind)
            if text is None:
                continue
            path = os.path.join(workdir, kind + ".json")
            with open(path, "w") as fh:
                fh.write(text)
            code, _ = _run_cli([kind, "import", path] + argv_tail)
            os.unlink(path)
            if code != 0:
                raise RuntimeError(f"airflow {kind} import exited with {code}")
            done[kind] = True
    for key, item in (request.get("variables") or {}).items():
        Variable.set(key, item["val"], description=item.get("description"), serialize_json=False)
    if request.get("variables") is not None:
        done["variables"] = True
    return done


def op_cli(request: dict[str, Any]) -> dict[str, Any]:
    code, out = _run_cli(list(request["argv"]), capture_dir=request.get("tmp_dir") or tempfile.gettempdir())
    return {"exit_code": code, "stdout": out}


OPERATIONS = {
    "info": op_info, "export": op_export, "cli": op_cli, "schema": op_schema, "secrets_check": op_secrets_check,
    "fernet_reencrypt": op_fernet_reencrypt, "fernet_repair": op_fernet_repair, "import": op_import,
    "environment": op_environment,
}


def main() -> None:
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # everything Airflow prints goes to stderr; only our reply uses reply_fd
    os.umask(0o077)
    request = _read_request()
    for key, value in (request.get("env") or {}).items():
        os.environ[key] = value
    if request.get("database"):
        _point_at(request["database"])
    if request.get("snapshot"):
        _read_in_snapshot(request["snapshot"])
    results = []
    for operation in request["ops"]:
        try:
            results.append({"ok": True, "result": OPERATIONS[operation["op"]](operation)})
        except Exception as exc:  # reported to the caller, who decides
            traceback.print_exc(file=sys.stderr)
            results.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            if not request.get("keep_going"):
                break
    _reply(reply_fd, {"results": results})


# The bootstrap runs this source with exec() in ``python -c``'s namespace, where __name__ is "__main__";
# importing the module (tests, tools, the type checker) must not run the agent.
if __name__ == "__main__":
    main()
