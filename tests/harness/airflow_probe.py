"""Read what an Airflow deployment holds, through Airflow's own API (run with the Airflow venv's python).

Independent of afbackup's agent: tests use it to check that restored
connections and variables read back exactly, under the deployment's key.
Prints one JSON document on the real stdout (fd 1 is pointed at stderr while
Airflow runs, so its log lines cannot get in the way).
"""

import json
import os
import sys


def main():
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    from airflow.models import Connection, Variable
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select, text

    with create_session() as session:
        conn_ids = [row[0] for row in session.execute(text("SELECT conn_id FROM connection ORDER BY 1"))]
        keys = [row[0] for row in session.execute(text("SELECT key FROM variable ORDER BY 1"))]
        pools = {p.pool: p.slots for p in session.scalars(select(Pool))}
    connections = {}
    for conn_id in conn_ids:
        conn = Connection.get_connection_from_secrets(conn_id)
        connections[conn_id] = {"password": conn.password, "extra": conn.extra, "login": conn.login,
                                "host": conn.host, "port": conn.port}
    variables = {key: Variable.get(key) for key in keys}
    json.dump({"connections": connections, "variables": variables, "pools": pools}, out)
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
