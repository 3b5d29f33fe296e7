"""Seed an Airflow metadata DB through Airflow's own CLI, in one interpreter (fast).

Run with the Airflow venv's python: ``python seed_airflow.py SPEC_JSON``. The
spec lists CLI argv lists; each runs through ``airflow.cli.cli_parser`` in
this process, so Airflow starts once instead of once per command.
"""

import json
import sys


def main():
    from airflow.cli import cli_parser

    spec = json.loads(sys.argv[1])
    for argv in spec["commands"]:
        args = cli_parser.get_parser().parse_args(argv)
        try:
            args.func(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError("airflow %s failed: %s" % (" ".join(argv[:3]), exc.code))


main()
