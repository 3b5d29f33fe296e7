"""The test tiers, enforced: in the unit tier (``make unit``) starting a real heavy component is an error.

The unit tier has what ``make install`` gives (the project venv with moto, plus
gpg and tar from the system) and nothing else: no PostgreSQL server, no Airflow
virtualenvs, no tools/awscli venvs, no Pushgateway. Every harness entry point
that would start or install one of those calls ``require(...)`` first, so a
test that needs one and is not marked ``integration`` fails loudly in
``make unit`` instead of quietly slowing it down or skipping.
"""

from __future__ import annotations

_unit_only = False


class TierViolation(RuntimeError):
    """A test in the unit tier tried to start a component the unit tier does not have."""


def enter_unit_tier() -> None:
    global _unit_only
    _unit_only = True


def in_unit_tier() -> bool:
    return _unit_only


def require(component: str) -> None:
    """Raise ``TierViolation`` in the unit tier; do nothing otherwise."""
    if _unit_only:
        raise TierViolation(
            f"this test needs {component}, which the unit tier (make unit) does not start: "
            "mark it @pytest.mark.integration (see CONTRIBUTING.md, 'Which tier to run when')")
