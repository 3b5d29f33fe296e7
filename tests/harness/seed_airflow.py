"""Seed an Airflow metadata DB through Airflow's own CLI, in one interpreter (fast).

Run with the Airflow venv's python, the spec as JSON on stdin. ``commands``
lists CLI argv lists; each runs through ``airflow.cli.cli_parser`` in this
process, so Airflow starts once instead of once per command. ``connections``
are created through the ORM instead: the CLI records its argv (passwords
included) in the ``log`` table, and the canary password must not be written
anywhere in plaintext, not even by the seeding.
"""

import json
import sys


def add_connections(specs):
    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        for spec in specs:
            session.add(Connection(**spec))


def main():
    from airflow.cli import cli_parser

    spec = json.loads(sys.stdin.read())
    add_connections(spec.get("connections", []))
    for argv in spec["commands"]:
        args = cli_parser.get_parser().parse_args(argv)
        try:
            args.func(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"airflow {' '.join(argv[:3])} failed: {exc.code}") from None


main()
