"""``afbackup restore-cleanup``: drop the databases a restore left for a target, and reopen a closed target.

A successful restore keeps the replaced database as ``<target>__afbackup_previous_<stamp>``
until the operator has accepted the restore; a restore killed with SIGKILL (no clean-up
possible) can leave its ``<target>__afbackup_restore_<stamp>`` staging database and the target
closed to new connections. This finds them by their database comment (afbackup.restore.swap),
drops those nobody is connected to (a staging database in use belongs to a restore still
running: it is kept, and the target is then left closed), and reopens the target.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from afbackup.config.model import Config
from afbackup.errors import ConfigError, UsageError
from afbackup.restore import quiesce, swap
from afbackup.restore.target import describe_server, maintenance_dsn
from afbackup.sources.postgres import target_password

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class CleanupReport:
    target: str
    server: str
    found: list[dict[str, str]] = dataclasses.field(default_factory=list)
    dropped: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)
    target_closed: bool = False
    reopened: bool = False
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def restore_cleanup(cfg: Config, target_dsn: str, *, yes: bool, dry_run: bool,
                    confirm: Callable[[str], bool]) -> CleanupReport:
    dbname = str(conninfo_to_dict(target_dsn).get("dbname") or "")
    if not dbname:
        raise ConfigError("--target-dsn names no database", hint="pass the DSN given to `afbackup restore`")
    if conninfo_to_dict(target_dsn).get("password"):
        raise ConfigError("--target-dsn must not contain a password (it would be visible in `ps`)",
                          hint="use restore.password_file, PGPASSWORD or PGPASSFILE")
    password = target_password(cfg)
    report = CleanupReport(dbname, describe_server(target_dsn), dry_run=dry_run)
    with quiesce.ddl_connection(maintenance_dsn(target_dsn), password, cfg.database.connect_timeout,
                                cfg.restore.lock_timeout) as conn:
        found = swap.leftovers(conn, dbname)
        report.found = [{"name": f.name, "kind": f.kind} for f in found]
        row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        report.target_closed = row is not None and not row[0]
        if dry_run or (not found and not report.target_closed):
            return report
        question = (f"Drop {', '.join(f.name for f in found) or 'nothing'}"
                    + (f" and reopen {dbname}" if report.target_closed else "") + f" on {report.server}?")
        if not yes and not confirm(question):
            raise UsageError("restore-cleanup cancelled: nothing was changed")
        for leftover in found:
            (report.dropped if swap.drop_leftover(conn, leftover.name) else report.kept).append(leftover.name)
        running = any(f.kind == "staging" and f.name in report.kept for f in found)
        if report.target_closed and not running:
            quiesce.set_connections(conn, dbname, True)
            report.reopened = True
            logger.warning("reopened %s to connections (it was closed by an interrupted restore)", dbname)
    return report
