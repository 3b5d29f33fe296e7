"""Retention planning: which complete backups ``prune`` keeps, and why (pure).

``plan_retention(candidates, policy, now)`` returns a ``Plan`` with one
``Decision`` per backup, each with its reasons. It reads no clock, does no I/O
and logs nothing; ``afbackup prune`` prints the plan and deletes only with
``--confirm``. Callers pass only *complete* backups (manifest written).

Semantics (like restic ``forget`` and borg ``prune``):

- Order: newest first by ``finished_at``, ties by ``backup_id`` descending,
  so the plan does not depend on the input order.
- ``keep_last N``: the N newest backups.
- ``keep_hourly/daily/weekly/monthly/yearly N``: the newest backup of each of
  the N most recent UTC hours / UTC days / ISO weeks / months / years *that
  have a backup*. Gaps do not use up slots.
- A backup kept by several rules lists every reason.
- Pinned backups are always kept. They also take part in the rules like any
  other backup (a pinned backup can be "the daily for 2026-11-24"), so pinning
  never makes the plan keep fewer backups than it would otherwise.
- The newest backup is always kept.
- ``min_keep M``: the M newest backups are always kept. This is a floor, not a
  top-up ("keep more until M are kept"): a top-up would drop a backup when a
  larger ``keep_*`` starts keeping an older one, and the planner is meant to be
  monotone (a larger policy never deletes a backup a smaller one kept).
- A backup that finished after ``now`` (clock skew, or a bogus timestamp) is
  kept and set aside: the rules, "newest" and ``min_keep`` apply to the others,
  so one backup dated 2099 cannot use up ``keep_last`` forever.
- An empty policy (every ``keep_*`` unset or 0) is refused with ConfigError.

Safety property: ``now`` is used only for the clock-skew check. Retention is
relative to the backups that exist, never to today's date, so a system that
stopped backing up months ago never ages out its last good backups. Replanning
over the kept backups deletes nothing more (idempotent).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence

from afbackup.config.model import RetentionConfig
from afbackup.errors import ConfigError

# Rule name -> bucket label (UTC). Order is the order reasons are listed in.
_BUCKETS: dict[str, Callable[[dt.datetime], str]] = {
    "hourly": lambda t: t.strftime("%Y-%m-%dT%HZ"),
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "{:04d}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: t.strftime("%Y"),
}
FUTURE = "finished in the future (clock skew?)"
NOT_KEPT = "not kept by any rule"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A complete backup. ``finished_at`` must be timezone-aware (bucketed in UTC)."""

    backup_id: str
    finished_at: dt.datetime
    pinned: bool = False

    def __post_init__(self) -> None:
        if self.finished_at.utcoffset() is None:
            raise ValueError(f"{self.backup_id}: finished_at must be timezone-aware")


@dataclasses.dataclass(frozen=True)
class Policy:
    """Counts of backups (``keep_last``) or of time buckets (the others) to keep."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    min_keep: int = 3

    def __post_init__(self) -> None:
        counts = [self.keep_last, *(self.bucket_count(rule) for rule in _BUCKETS)]
        if self.min_keep < 1 or any(n is not None and n < 0 for n in counts):
            raise ConfigError(f"invalid retention policy {self}",
                              hint="keep_* must be >= 0 and min_keep >= 1")

    @classmethod
    def from_config(cls, config: RetentionConfig) -> Policy:
        return cls(config.keep_last, config.keep_hourly, config.keep_daily, config.keep_weekly,
                   config.keep_monthly, config.keep_yearly, config.min_keep)

    def bucket_count(self, rule: str) -> int | None:
        return getattr(self, f"keep_{rule}")

    @property
    def is_empty(self) -> bool:
        """True when no ``keep_*`` rule keeps anything; ``min_keep`` alone is no policy."""
        return not (self.keep_last or any(self.bucket_count(rule) for rule in _BUCKETS))


@dataclasses.dataclass(frozen=True)
class Decision:
    backup_id: str
    keep: bool
    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    """One decision per backup, newest first."""

    decisions: tuple[Decision, ...]

    @property
    def keep(self) -> list[str]:
        return [d.backup_id for d in self.decisions if d.keep]

    @property
    def delete(self) -> list[str]:
        return [d.backup_id for d in self.decisions if not d.keep]


def plan_retention(candidates: Sequence[Candidate], policy: Policy, now: dt.datetime) -> Plan:
    """Decide keep/delete for each backup; ``now`` (tz-aware) only flags future-dated ones.

    Raises ConfigError if the policy is empty; ValueError on duplicate ids.
    """
    if policy.is_empty:
        raise ConfigError("no retention policy configured, refusing to prune",
                          hint="set keep_* in [retention]")
    if len({c.backup_id for c in candidates}) != len(candidates):
        raise ValueError("duplicate backup_id in retention candidates")
    ordered = sorted(candidates, key=lambda c: (c.finished_at, c.backup_id), reverse=True)
    reasons: dict[str, list[str]] = {c.backup_id: [] for c in ordered}
    for c in ordered:
        if c.finished_at > now:
            reasons[c.backup_id].append(FUTURE)
        if c.pinned:
            reasons[c.backup_id].append("pinned")
    ruled = [c for c in ordered if c.finished_at <= now]
    for backup_id, reason in _rule_reasons(ruled, policy):
        reasons[backup_id].append(reason)
    return Plan(tuple(Decision(c.backup_id, bool(reasons[c.backup_id]),
                               tuple(reasons[c.backup_id]) or (NOT_KEPT,)) for c in ordered))


def _rule_reasons(ordered: Sequence[Candidate], policy: Policy) -> list[tuple[str, str]]:
    """(backup_id, reason) pairs from newest, keep_last, the buckets and min_keep.

    ``ordered`` is newest first and holds no future-dated backup.
    """
    out: list[tuple[str, str]] = [(ordered[0].backup_id, "newest")] if ordered else []
    n_last = policy.keep_last or 0
    out += [(c.backup_id, f"last {i}/{n_last}") for i, c in enumerate(ordered[:n_last], 1)]
    for rule, label_of in _BUCKETS.items():
        out += _bucket_reasons(ordered, rule, label_of, policy.bucket_count(rule) or 0)
    floor = policy.min_keep
    out += [(c.backup_id, f"min_keep {i}/{floor}") for i, c in enumerate(ordered[:floor], 1)]
    return out


def _bucket_reasons(ordered: Sequence[Candidate], rule: str,
                    label_of: Callable[[dt.datetime], str], count: int) -> list[tuple[str, str]]:
    """The newest backup of each of the ``count`` most recent buckets that have one."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for c in ordered:
        if len(seen) >= count:
            break
        label = label_of(c.finished_at.astimezone(dt.UTC))
        if label not in seen:  # newest first, so the first hit is the bucket's newest
            seen.add(label)
            out.append((c.backup_id, f"{rule} {label} ({len(seen)}/{count})"))
    return out
