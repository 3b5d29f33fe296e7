"""The staging database: created like the target, so the swap changes the data and nothing else.

``CREATE DATABASE … TEMPLATE template0`` with the target's owner, encoding,
locale (and locale provider), tablespace and connection limit; then its
database privileges, and its settings: ``ALTER DATABASE … SET`` and ``ALTER
ROLE … IN DATABASE … SET`` (pg_db_role_setting). A fresh database would lose
them silently, and a lost ``search_path`` is an Airflow that cannot find its
tables. A setting this role may not set (a superuser-only parameter, another
role's setting without CREATEROLE) is not fatal: it is reported with the exact
statement to run after the restore.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from afbackup.restore.target import TargetState
from afbackup.sources.postgres import one_row

logger = logging.getLogger(__name__)

# Parameters whose stored value is a list of quoted elements (PostgreSQL's GUC_LIST_QUOTE): set element by element.
_LIST_QUOTE = frozenset({"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
                         "shared_preload_libraries", "unix_socket_directories"})


def create_like(conn: psycopg.Connection, state: TargetState, name: str) -> tuple[list[str], list[str]]:
    """Create ``name`` like the target (or plainly, for a new target): (what was carried, what could not be)."""
    parts = [sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))]
    if not state.exists:
        conn.execute(sql.SQL(" ").join(parts))
        return [], []
    facts: dict[str, Any] = one_row(conn.execute(
        "SELECT to_jsonb(d) || jsonb_build_object('owner', pg_get_userbyid(datdba), 'enc',"
        " pg_encoding_to_char(encoding), 'space', (SELECT spcname FROM pg_tablespace WHERE oid = dattablespace))"
        " FROM pg_database d WHERE datname = %s", (state.dbname,)))[0]
    parts += [sql.SQL("OWNER {}").format(sql.Identifier(facts["owner"])),
              sql.SQL("ENCODING {}").format(sql.Literal(facts["enc"])),
              sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(facts["datcollate"]),
                                                         sql.Literal(facts["datctype"])),
              sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(facts["datconnlimit"])))]
    provider, locale = facts.get("datlocprovider", "c"), facts.get("datlocale") or facts.get("daticulocale")
    if provider == "i":
        parts.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(locale)))
    elif provider == "b":
        parts.append(sql.SQL("LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(locale)))
    if facts["space"] != "pg_default":
        parts.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(facts["space"])))
    conn.execute(sql.SQL(" ").join(parts))
    carried = [f"owner {facts['owner']}, encoding {facts['enc']}, locale {facts['datcollate']}"]
    carried += _copy_privileges(conn, state.dbname, name)
    settings, missed = _copy_settings(conn, state.dbname, name)
    return carried + settings, missed


def _copy_privileges(conn: psycopg.Connection, source: str, dest: str) -> list[str]:
    grants = conn.execute(
        "SELECT coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), ''), a.privilege_type, a.is_grantable"
        " FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s AND a.grantee <> d.datdba",
        (source,)).fetchall()
    explicit = one_row(conn.execute("SELECT datacl IS NOT NULL FROM pg_database WHERE datname = %s", (source,)))[0]
    if not explicit:
        return []
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dest)))
    for grantee, privilege, grantable in grants:
        conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
            sql.SQL(privilege), sql.Identifier(dest), sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
            sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    return [f"{len(grants)} database privilege grant(s)"]


def _copy_settings(conn: psycopg.Connection, source: str, dest: str) -> tuple[list[str], list[str]]:
    """Every ``ALTER DATABASE … SET`` and ``ALTER ROLE … IN DATABASE … SET`` of ``source``, onto ``dest``."""
    rows = conn.execute(
        "SELECT coalesce(pg_get_userbyid(NULLIF(s.setrole, 0)), ''), unnest(s.setconfig) FROM pg_db_role_setting s"
        " JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s ORDER BY 1, 2", (source,)).fetchall()
    carried, missed = 0, []
    for role, entry in rows:
        name, _, value = entry.partition("=")
        try:
            conn.execute(set_statement(dest, role, name, value))
            carried += 1
        except psycopg.Error as exc:
            final = set_statement(source, role, name, value).as_string(conn)  # the restored one gets this name
            missed.append(f"{final} ({str(exc).strip().splitlines()[0]})")
            logger.warning("could not carry the setting %s%s to the restored database: %s; run after the restore: "
                           "%s;", entry, f" of role {role}" if role else "", str(exc).strip().splitlines()[0], final)
    return ([f"{carried} database setting(s)"] if carried else []), missed


def set_statement(database: str, role: str, name: str, value: str) -> sql.Composed:
    """``ALTER DATABASE d SET name TO …`` (or ``ALTER ROLE r IN DATABASE d SET …``), the value as stored."""
    values = split_list(value) if name.lower() in _LIST_QUOTE else [value]
    setting = sql.SQL("SET {} TO {}").format(sql.Identifier(name.lower()),
                                             sql.SQL(", ").join(sql.Literal(v) for v in values))
    if role:
        return sql.SQL("ALTER ROLE {} IN DATABASE {} {}").format(sql.Identifier(role), sql.Identifier(database),
                                                                 setting)
    return sql.SQL("ALTER DATABASE {} {}").format(sql.Identifier(database), setting)


def split_list(value: str) -> list[str]:
    """A list setting as PostgreSQL stores it (``"$user", public``) into its elements (``$user``, ``public``)."""
    items: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            item, i = [], i + 1
            while i < n:
                if value[i] == '"' and i + 1 < n and value[i + 1] == '"':
                    item.append('"')
                    i += 2
                elif value[i] == '"':
                    i += 1
                    break
                else:
                    item.append(value[i])
                    i += 1
            items.append("".join(item))
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            items.append(value[start:i].strip())
        while i < n and value[i] != ",":
            i += 1
        i += 1  # the comma
    return items or [""]
