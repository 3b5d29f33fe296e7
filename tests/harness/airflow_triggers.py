"""Create or read triggers through Airflow's own model (run with the Airflow venv's python).

``add``: the JSON spec on stdin (``classpath``, ``kwargs``) becomes a ``Trigger``
row, its kwargs encrypted under this deployment's Fernet key by Airflow
itself; prints its id. ``read``: prints every trigger's kwargs as Airflow
decrypts them with this deployment's key (what the triggerer would see).
"""

import json
import os
import sys


def main():
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        if sys.argv[1] == "add":
            spec = json.loads(sys.stdin.read())
            trigger = Trigger(classpath=spec["classpath"], kwargs=spec["kwargs"])
            session.add(trigger)
            session.flush()
            result = trigger.id
        else:
            rows = session.execute(text("SELECT id, kwargs FROM trigger ORDER BY id")).fetchall()
            result = {str(tid): Trigger._decrypt_kwargs(kwargs) for tid, kwargs in rows}
    json.dump(result, out, default=str)
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
