"""The in-flight planner: every in-flight row gets the policy's state and a reason; nothing else is touched."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from afbackup.inflight import POLICIES, RUN_STATES, TASK_STATES, RunRow, TaskRow, plan_in_flight, summarize

TASKS = [TaskRow("etl", "r1", "extract", -1, "running"), TaskRow("etl", "r1", "transform", -1, "queued"),
         TaskRow("etl", "r1", "load", -1, "scheduled")]
RUNS = [RunRow("etl", "r1", "running"), RunRow("etl", "r2", "queued")]


@pytest.mark.parametrize("policy, task_state, run_states", [
    ("reset", None, ["running", "queued"]),
    ("fail", "failed", ["failed", "failed"]),
    ("keep", "keep", ["running", "queued"]),
])
def test_each_policy_sets_the_documented_states(policy, task_state, run_states):
    plan = plan_in_flight(TASKS, RUNS, policy)
    tasks = [a for a in plan.actions if a.kind == "task_instance"]
    runs = [a for a in plan.actions if a.kind == "dag_run"]
    assert [a.new_state for a in tasks] == [a.state if task_state == "keep" else task_state for a in tasks]
    assert [a.new_state for a in runs] == run_states
    assert all(a.reason for a in plan.actions)


def test_keep_changes_nothing_and_the_summary_counts_changes():
    assert plan_in_flight(TASKS, RUNS, "keep").summary() == {"policy": "keep", "task_instances": {}, "dag_runs": {}}
    assert plan_in_flight(TASKS, RUNS, "fail").summary()["dag_runs"] == {"queued->failed": 1, "running->failed": 1}


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError):
        plan_in_flight(TASKS, RUNS, "retry")


STATES = st.sampled_from(TASK_STATES + ("success", "failed", "skipped", "removed"))


@given(st.lists(st.builds(TaskRow, st.sampled_from(["a", "b"]), st.sampled_from(["r1", "r2"]),
                          st.text(min_size=1, max_size=3), st.integers(-1, 2), STATES), max_size=30),
       st.lists(st.builds(RunRow, st.just("a"), st.text(max_size=3), st.sampled_from(RUN_STATES + ("success",))),
                max_size=10),
       st.sampled_from(POLICIES))
def test_only_in_flight_rows_are_ever_touched(tasks, runs, policy):
    plan = plan_in_flight(tasks, runs, policy)
    assert all(a.state in TASK_STATES for a in plan.actions if a.kind == "task_instance")
    assert all(a.state in RUN_STATES for a in plan.actions if a.kind == "dag_run")
    assert len([a for a in plan.actions if a.kind == "task_instance"]) == sum(t.state in TASK_STATES for t in tasks)


def test_the_record_counts_per_dag_and_bounds_the_list():
    many = [TaskRow("big", "r", f"t{i:03d}", -1, "queued") for i in range(150)]
    record = summarize(many + TASKS, RUNS, {"etl": 1, None: 2})
    assert (record["task_instances"], record["dag_runs"], record["triggers"]) == (153, 2, 3)
    assert record["by_dag"]["etl"] == {"task_instances": {"running": 1, "queued": 1, "scheduled": 1},
                                       "dag_runs": {"running": 1, "queued": 1}, "triggers": 1}
    assert len(record["tasks"]) == 100 and record["tasks_truncated"] is True
