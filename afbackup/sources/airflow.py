"""Airflow through the agent: exports, checks and CLI commands, on any executor.

The agent (``airflow_agent.py``) is sent as source over stdin and run by the
Python that runs Airflow; its reply is framed and checksummed, so nothing
Airflow logs can corrupt an export and nothing lost in the exec channel goes
unnoticed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from afbackup.config.model import AirflowConfig
from afbackup.errors import AfbackupError, ConfigError, SourceError
from afbackup.executors.base import Executor

logger = logging.getLogger(__name__)

MAGIC = b"AFBACKUP-AGENT/1"
BOOTSTRAP = (
    "import sys;n=int(sys.stdin.buffer.readline());"
    "exec(compile(sys.stdin.buffer.read(n),'afbackup-agent','exec'))"
)
EXPORT_FILES = ("connections.json", "variables.json", "pools.json")
# Which metadata table each export must match, row for row.
EXPORT_TABLES = {"connections.json": "connection", "variables.json": "variable", "pools.json": "slot_pool"}


# One program, sent as one source: the last part calls main().
AGENT_PARTS = ("airflow_agent_env.py", "airflow_agent_db.py", "airflow_agent.py")


FUTURE = b"from __future__ import annotations\n"


def agent_source() -> bytes:
    """The agent's parts as one program; its ``__future__`` import (valid only first) is hoisted to the top."""
    package = resources.files("afbackup.sources")
    return FUTURE + b"\n".join(package.joinpath(part).read_bytes().replace(FUTURE, b"") for part in AGENT_PARTS)


def resolve_python(cfg: AirflowConfig) -> list[str]:
    """The interpreter that runs Airflow: ``[airflow] python``, or read off the CLI's shebang."""
    if cfg.python:
        return list(cfg.python)
    if cfg.executor == "kubernetes":
        return ["python"]
    command = list(cfg.command)
    path = shutil.which(command[0]) if len(command) == 1 else None
    interpreter = _shebang_python(path) if path else None
    if not interpreter:
        raise ConfigError(
            f"cannot tell which Python runs the Airflow CLI {shlex.join(command)!r}",
            hint="set [airflow] python to its interpreter, e.g. [\"/opt/airflow/venv/bin/python\"]",
        )
    return interpreter


def _shebang_python(path: str) -> list[str] | None:
    """``#!/venv/bin/python`` -> [that]; also pip's ``'''exec' "/long/path/python"`` form."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    words = shlex.split(head[0][2:].strip())
    if words and os.path.basename(words[0]) == "env":
        words = [word for word in words[1:] if not word.startswith("-")]
    if words and "python" in os.path.basename(words[0]):
        return words
    if len(head) > 1 and head[1].startswith("'''exec'"):
        words = shlex.split(head[1][len("'''exec'"):])
        if words and "python" in os.path.basename(words[0]):
            return [words[0]]
    return None


class AirflowAgent:
    """Runs agent operations through an executor and checks the framed reply."""

    def __init__(self, executor: Executor, python: Sequence[str], *, timeout: float) -> None:
        self.executor = executor
        self.python = list(python)
        self.timeout = timeout

    def call(self, ops: list[dict], *, env: Mapping[str, str] | None = None, database: Mapping | None = None,
             stage: str = "airflow", snapshot: str | None = None) -> list[dict]:
        """Run ``ops`` in one interpreter; return each op's result or raise on the first failure.

        ``env`` is set in the agent before Airflow is imported; ``database`` (host, port, user,
        dbname, query) points its Airflow at another database, keeping its own SQLAlchemy driver;
        ``snapshot`` (a ``pg_export_snapshot()`` id) makes every read of its Airflow see that snapshot.
        """
        source = agent_source()
        request = json.dumps({"ops": ops, "env": dict(env or {}), "database": database,
                              "snapshot": snapshot}).encode()
        stdin = b"%d\n%s%d\n%s" % (len(source), source, len(request), request)
        try:
            result = self.executor.run([*self.python, "-c", BOOTSTRAP], stdin=stdin, timeout=self.timeout)
        except AfbackupError as exc:
            exc.stage = exc.stage or stage  # name the step that needed the executor
            raise
        reply = _parse_reply(result.stdout)
        if reply is None:
            if result.returncode != 0:
                raise SourceError(
                    f"the Airflow agent exited with {result.returncode} on {self.executor.describe()}: "
                    f"{result.stderr_tail()}",
                    stage=stage,
                    hint="check [airflow] command/python and that Airflow can reach its database",
                )
            raise SourceError(f"the Airflow agent on {self.executor.describe()} sent no reply", stage=stage)
        outcomes = []
        for op, outcome in zip(ops, reply["results"], strict=False):  # the agent stops at the first failure
            if not outcome.get("ok"):
                raise SourceError(
                    f"airflow {op['op']} failed on {self.executor.describe()}: {outcome.get('error')}", stage=stage
                )
            outcomes.append(outcome["result"])
        if len(outcomes) != len(ops):
            raise SourceError(f"the Airflow agent answered {len(outcomes)} of {len(ops)} operations", stage=stage)
        return outcomes

    def info(self) -> dict:
        return self.call([{"op": "info"}], stage="airflow info")[0]

    def cli(self, *argv: str, env: Mapping[str, str] | None = None, stage: str = "airflow") -> dict:
        """Run one Airflow CLI command in the agent; returns its exit code and captured stdout."""
        return self.call([{"op": "cli", "argv": list(argv)}], env=env, stage=stage)[0]


def _parse_reply(stdout: bytes) -> dict | None:
    """Find and check the framed reply; a damaged frame is an exec-channel failure."""
    start = stdout.find(MAGIC)
    if start < 0:
        return None
    header_end = stdout.find(b"\n", start)
    try:
        _, length, digest = stdout[start:header_end].decode("ascii").split()
        body = stdout[header_end + 1 : header_end + 1 + int(length)]
    except ValueError:
        raise SourceError("the Airflow agent's reply header is damaged", stage="exec") from None
    if len(body) != int(length) or hashlib.sha256(body).hexdigest() != digest:
        raise SourceError(
            f"the Airflow agent's reply is damaged or truncated ({len(body)} of {length} bytes arrived)",
            stage="exec",
            hint="the exec channel lost data; run again",
        )
    return json.loads(body)


@dataclasses.dataclass(frozen=True)
class AirflowExports:
    """Validated exports, held in memory only (they contain plaintext credentials)."""

    files: Mapping[str, bytes]  # archive member name -> JSON bytes
    counts: Mapping[str, int]  # connections/variables/pools -> entries
    info: Mapping[str, Any]  # airflow version, env-defined names, secrets backend
    secret_members: Mapping[str, bytes]  # exact variables, Fernet keys


def export_all(agent: AirflowAgent, tmp_dir: str, *, include_fernet_keys: bool = True,
               snapshot: str | None = None) -> AirflowExports:
    """One agent round trip: info + the three exports + the exact variable values.

    With ``snapshot`` (the dump's exported snapshot) they are read in that snapshot: the
    exports and the dump describe the same moment, row for row.
    """
    info, exported = agent.call(
        [{"op": "info"}, {"op": "export", "tmp_dir": tmp_dir, "include_fernet_keys": include_fernet_keys}],
        stage="export", snapshot=snapshot,
    )
    files, counts = {}, {}
    for name in EXPORT_FILES:
        text = exported["files"].get(name)
        parsed = _parse_export(name, text)
        files[name] = text.encode("utf-8")
        counts[name.removesuffix(".json")] = len(parsed)
    secret = {"variables_exact.json": _canonical(exported["variables_exact"])}
    if include_fernet_keys:
        secret["fernet.json"] = _canonical({"keys": exported.get("fernet_keys", [])})
    return AirflowExports(files=files, counts=counts, info=info, secret_members=secret)


def _parse_export(name: str, text: str | None) -> dict:
    if text is None:
        raise SourceError(f"the agent returned no {name}", stage="export")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{name} from the Airflow CLI is not valid JSON: {exc.msg} at char {exc.pos}",
                          stage="export") from None
    if not isinstance(parsed, dict):
        raise SourceError(f"{name} from the Airflow CLI is a JSON {type(parsed).__name__}, not an object",
                          stage="export")
    return parsed


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=1).encode("utf-8")


def check_export_counts(exports: AirflowExports, row_counts: Mapping[str, int]) -> None:
    """Each export must have exactly as many entries as its table has rows in the dump."""
    for name, table in EXPORT_TABLES.items():
        kind = name.removesuffix(".json")
        if table not in row_counts:
            continue
        if exports.counts[kind] != row_counts[table]:
            raise SourceError(
                f"{kind} export has {exports.counts[kind]} entries but table {table} has {row_counts[table]} rows",
                stage="export",
                hint="something changed them during the backup, or the CLI skipped entries; run the backup again",
            )
