"""What one run did: the record that the notification channels (Slack, Pushgateway metrics) report.

A leaf module (standard library only), so the low-level Pushgateway client
(``afbackup.metrics``) and the notifier (``afbackup.notify``) both depend on it
and not on each other.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Outcome:
    """What one run did. ``seconds``: wall-clock duration; ``bytes``: stored size.

    ``extra`` holds command-specific numbers (``rto_seconds``, ``rpo_seconds``
    for a drill, ``deleted``/``kept`` for prune); ``labels`` the run's labels.
    """

    command: str
    ok: bool
    exit_code: int
    seconds: float
    backup_id: str = ""
    bytes: int = 0
    rows: int = 0
    error: str = ""
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
