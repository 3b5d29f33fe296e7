"""The retention planner: restic-like examples, then properties (hypothesis)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afbackup.config.model import RetentionConfig
from afbackup.errors import ConfigError
from afbackup.retention import FUTURE, NOT_KEPT, Candidate, Plan, Policy, plan_retention

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def daily(n: int, *, pinned: frozenset[int] = frozenset()) -> list[Candidate]:
    """``n`` backups, one per day ending 2026-11-29 (``b00`` is the newest)."""
    last = dt.datetime(2026, 11, 29, 2, tzinfo=UTC)
    return [Candidate(f"b{i:02d}", last - dt.timedelta(days=i), pinned=i in pinned) for i in range(n)]


def table(plan: Plan) -> dict[str, tuple[bool, tuple[str, ...]]]:
    return {d.backup_id: (d.keep, d.reasons) for d in plan.decisions}


# --- examples -----------------------------------------------------------------


def test_restic_like_plan_lists_every_reason():
    # GIVEN 20 daily backups, the newest on Sunday 2026-11-29 (ISO week 48)
    policy = Policy(keep_last=3, keep_daily=7, keep_weekly=4, min_keep=3)
    # WHEN planning
    plan = plan_retention(daily(20), policy, NOW)
    # THEN the 7 newest days are kept, plus the newest of the 4 most recent weeks
    got = table(plan)
    assert got["b00"] == (True, ("newest", "last 1/3", "daily 2026-11-29 (1/7)",
                                 "weekly 2026-W48 (1/4)", "min_keep 1/3"))
    assert got["b02"] == (True, ("last 3/3", "daily 2026-11-27 (3/7)", "min_keep 3/3"))
    assert got["b06"] == (True, ("daily 2026-11-23 (7/7)",))
    assert got["b07"] == (True, ("weekly 2026-W47 (2/4)",))
    assert got["b14"] == (True, ("weekly 2026-W46 (3/4)",))
    assert got["b19"] == (False, (NOT_KEPT,))
    assert plan.keep == ["b00", "b01", "b02", "b03", "b04", "b05", "b06", "b07", "b14"]
    assert plan.delete == [f"b{i:02d}" for i in (8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19)]


def test_decisions_are_newest_first_with_ties_broken_by_id():
    t = dt.datetime(2026, 1, 1, tzinfo=UTC)
    plan = plan_retention([Candidate("a", t), Candidate("c", t), Candidate("b", t)],
                          Policy(keep_last=1, min_keep=1), NOW)
    assert [d.backup_id for d in plan.decisions] == ["c", "b", "a"]
    assert plan.keep == ["c"]


def test_daily_buckets_skip_days_without_backups():
    # GIVEN backups 10 days apart: keep_daily=3 keeps 3 backups, not "the last 3 days"
    cands = [Candidate(f"b{i}", NOW - dt.timedelta(days=10 * i + 1)) for i in range(5)]
    plan = plan_retention(cands, Policy(keep_daily=3, min_keep=1), NOW)
    assert plan.keep == ["b0", "b1", "b2"]


def test_daily_keeps_the_newest_of_each_day():
    base = dt.datetime(2026, 11, 29, tzinfo=UTC)
    cands = [Candidate(f"d{d}h{h}", base - dt.timedelta(days=d) + dt.timedelta(hours=h))
             for d in range(3) for h in (1, 12, 23)]
    plan = plan_retention(cands, Policy(keep_daily=2, min_keep=1), NOW)
    assert plan.keep == ["d0h23", "d1h23"]


def test_buckets_are_utc_days_whatever_the_input_offset():
    tz = dt.timezone(dt.timedelta(hours=-5))
    # 22:00 at UTC-5 on the 28th is 03:00 UTC on the 29th: same UTC day as the other one
    cands = [Candidate("late", dt.datetime(2026, 11, 28, 22, tzinfo=tz)),
             Candidate("early", dt.datetime(2026, 11, 29, 1, tzinfo=UTC))]
    plan = plan_retention(cands, Policy(keep_daily=5, min_keep=1), NOW)
    assert table(plan)["late"] == (True, ("newest", "daily 2026-11-29 (1/5)", "min_keep 1/1"))
    assert plan.delete == ["early"]


def test_hourly_monthly_yearly_reasons():
    cands = [Candidate("a", dt.datetime(2026, 3, 1, 5, 30, tzinfo=UTC)),
             Candidate("b", dt.datetime(2025, 12, 31, 23, 59, tzinfo=UTC))]
    plan = plan_retention(cands, Policy(keep_hourly=1, keep_monthly=2, keep_yearly=2, min_keep=1), NOW)
    assert table(plan)["a"][1] == ("newest", "hourly 2026-03-01T05Z (1/1)", "monthly 2026-03 (1/2)",
                                   "yearly 2026 (1/2)", "min_keep 1/1")
    assert table(plan)["b"] == (True, ("monthly 2025-12 (2/2)", "yearly 2025 (2/2)"))


@pytest.mark.parametrize("policy", [Policy(), Policy(keep_last=0, keep_daily=0, min_keep=5),
                                    Policy.from_config(RetentionConfig())])
def test_empty_policy_is_refused(policy):
    assert policy.is_empty
    with pytest.raises(ConfigError, match="no retention policy") as info:
        plan_retention(daily(3), policy, NOW)
    assert "keep_*" in info.value.hint
    with pytest.raises(ConfigError):  # even with nothing to prune
        plan_retention([], policy, NOW)


def test_policy_from_config_and_validation():
    cfg = RetentionConfig(keep_last=2, keep_weekly=4, min_keep=5)
    assert Policy.from_config(cfg) == Policy(keep_last=2, keep_weekly=4, min_keep=5)
    with pytest.raises(ConfigError):
        Policy(keep_last=1, min_keep=0)
    with pytest.raises(ConfigError):
        Policy(keep_daily=-1)


def test_min_keep_is_a_floor_of_newest_backups():
    plan = plan_retention(daily(10), Policy(keep_last=1, min_keep=4), NOW)
    assert plan.keep == ["b00", "b01", "b02", "b03"]
    assert table(plan)["b03"] == (True, ("min_keep 4/4",))


def test_min_keep_floor_stays_monotone_where_a_top_up_would_not():
    # GIVEN n1, n2 on one day, n3 the day before, "old" two years earlier
    cands = [Candidate("n1", dt.datetime(2026, 5, 2, 12, tzinfo=UTC)),
             Candidate("n2", dt.datetime(2026, 5, 2, 1, tzinfo=UTC)),
             Candidate("n3", dt.datetime(2026, 5, 1, 1, tzinfo=UTC)),
             Candidate("old", dt.datetime(2024, 5, 1, 1, tzinfo=UTC))]
    small = Policy(keep_daily=1, keep_yearly=2, min_keep=3)
    # WHEN keep_daily grows from 1 to 2
    kept_small = plan_retention(cands, small, NOW).keep
    kept_large = plan_retention(cands, dataclasses.replace(small, keep_daily=2), NOW).keep
    # THEN n2 (kept by the floor) stays kept; "top up to 3" would have dropped it for n3
    assert kept_small == ["n1", "n2", "n3", "old"]
    assert set(kept_small) <= set(kept_large)


def test_min_keep_larger_than_the_backups_keeps_all():
    assert plan_retention(daily(2), Policy(keep_last=1, min_keep=5), NOW).delete == []


def test_pinned_is_kept_and_still_fills_its_bucket():
    plan = plan_retention(daily(10, pinned=frozenset({1, 9})), Policy(keep_daily=2, min_keep=1), NOW)
    assert table(plan)["b09"] == (True, ("pinned",))
    assert table(plan)["b01"] == (True, ("pinned", "daily 2026-11-28 (2/2)"))
    assert plan.keep == ["b00", "b01", "b09"]


def test_future_dated_backup_is_kept_and_does_not_use_up_keep_last():
    cands = [*daily(3), Candidate("skewed", NOW + dt.timedelta(days=365))]
    plan = plan_retention(cands, Policy(keep_last=1, min_keep=1), NOW)
    assert table(plan)["skewed"] == (True, (FUTURE,))
    assert table(plan)["b00"][1] == ("newest", "last 1/1", "min_keep 1/1")
    assert plan.keep == ["skewed", "b00"]


def test_a_stale_system_never_ages_out_its_last_backups():
    # GIVEN the last backups are a year old: retention is relative to them, not to now
    plan = plan_retention(daily(10), Policy(keep_daily=3, min_keep=1), NOW + dt.timedelta(days=365))
    assert plan.keep == ["b00", "b01", "b02"]


def test_no_candidates_is_an_empty_plan():
    assert plan_retention([], Policy(keep_last=1), NOW) == Plan(())


def test_duplicate_ids_and_naive_times_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        plan_retention([daily(1)[0], daily(1)[0]], Policy(keep_last=1), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        Candidate("x", dt.datetime(2026, 1, 1))


# --- properties ---------------------------------------------------------------

WINDOW_START = dt.datetime(2024, 1, 1, tzinfo=UTC)
WINDOW_SECONDS = 3 * 365 * 86400
KEEP_FIELDS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


@st.composite
def candidate_lists(draw) -> list[Candidate]:
    """0-60 backups with unique ids in a 3-year window, clustered so that buckets collide.

    Each backup is near one of 1-3 anchor times (years apart), at a multiple of a
    unit (1 minute to 6 hours): same hours, days and weeks, distinct years, and
    equal timestamps all come up often.
    """
    anchors = draw(st.lists(st.integers(0, WINDOW_SECONDS // 2), min_size=1, max_size=3))
    unit = draw(st.sampled_from([60, 1200, 3600, 6 * 3600]))
    # One integer per backup (cheaper to generate): which anchor, and how many units after it.
    points = draw(st.lists(st.integers(0, 721 * len(anchors) - 1), max_size=60))
    pinned = set(draw(st.lists(st.integers(0, 59), max_size=4)))
    return [Candidate(f"id{k:02d}", WINDOW_START + dt.timedelta(seconds=anchors[p // 721] * 2 + p % 721 * unit),
                      pinned=k in pinned) for k, p in enumerate(points)]


small_counts = st.one_of(st.integers(0, 3), st.integers(0, 12))
# Mostly 1-3 rules (so min_keep and each rule matter), sometimes every rule.
sparse_policies = st.builds(lambda rules, m: Policy(**rules, min_keep=m),
                            st.dictionaries(st.sampled_from(KEEP_FIELDS), small_counts, min_size=1, max_size=3),
                            st.integers(1, 8))
dense_policies = st.builds(Policy, *[st.one_of(st.none(), small_counts)] * len(KEEP_FIELDS),
                           min_keep=st.integers(1, 8))
policies = st.one_of(sparse_policies, sparse_policies, dense_policies).filter(lambda p: not p.is_empty)
# Mostly after every backup; sometimes inside the window, so some backups are future-dated.
nows = st.one_of(st.just(WINDOW_START + dt.timedelta(days=3 * 366)),
                 st.integers(0, WINDOW_SECONDS).map(lambda s: WINDOW_START + dt.timedelta(seconds=s)))
PROPERTY = settings(max_examples=300, deadline=None, database=None)  # no .hypothesis/ in the tree


def newest(cands: list[Candidate]) -> Candidate:
    return max(cands, key=lambda c: (c.finished_at, c.backup_id))


@PROPERTY
@given(candidate_lists(), policies, nows)
def test_prop_never_below_min_keep(cands, policy, now):
    plan = plan_retention(cands, policy, now)
    assert len(plan.keep) >= min(policy.min_keep, len(cands))
    assert sorted(plan.keep + plan.delete) == sorted(c.backup_id for c in cands)


@PROPERTY
@given(candidate_lists().filter(bool), policies, nows)
def test_prop_never_deletes_the_newest(cands, policy, now):
    plan = plan_retention(cands, policy, now)
    assert newest(cands).backup_id in plan.keep
    assert plan.decisions[0].backup_id == newest(cands).backup_id
    plausible = [c for c in cands if c.finished_at <= now]
    if plausible:  # also the newest that is not future-dated
        assert newest(plausible).backup_id in plan.keep


@PROPERTY
@given(candidate_lists(), policies, nows)
def test_prop_never_deletes_a_pinned_backup(cands, policy, now):
    plan = plan_retention(cands, policy, now)
    assert not {c.backup_id for c in cands if c.pinned} & set(plan.delete)


@PROPERTY
@given(candidate_lists(), policies, nows)
def test_prop_idempotent(cands, policy, now):
    first = plan_retention(cands, policy, now)
    kept = set(first.keep)
    second = plan_retention([c for c in cands if c.backup_id in kept], policy, now)
    assert second.delete == []


@PROPERTY
@given(candidate_lists(), policies, nows, st.integers(1, 10))
def test_prop_monotone_in_the_policy(cands, policy, now, extra):
    small_kept = set(plan_retention(cands, policy, now).keep)
    for field in (*KEEP_FIELDS, "min_keep"):  # each one in turn: cheap, and finds more
        larger = dataclasses.replace(policy, **{field: (getattr(policy, field) or 0) + extra})
        assert small_kept <= set(plan_retention(cands, larger, now).keep), field


@PROPERTY
@given(candidate_lists(), policies, nows)
def test_prop_every_decision_has_a_reason(cands, policy, now):
    for d in plan_retention(cands, policy, now).decisions:
        assert d.reasons
        assert (d.reasons == (NOT_KEPT,)) is (not d.keep)


@PROPERTY
@given(candidate_lists(), policies, nows, st.randoms(use_true_random=False))
def test_prop_deterministic_under_shuffle(cands, policy, now, rnd: random.Random):
    shuffled = list(cands)
    rnd.shuffle(shuffled)
    assert plan_retention(shuffled, policy, now) == plan_retention(cands, policy, now)
