"""``afbackup prune`` (dry run unless ``--confirm``), ``pin`` / ``unpin``, and ``break-lock``.

``break-lock`` removes a stale writer lock (``--yes``), or a live one (``--yes --force``) whose holder
then notices at its next refresh and stops before committing; see ``afbackup.lock.break_lock``.
"""

from __future__ import annotations

import click

from afbackup.cli.context import AppContext, emit, emit_json, pass_app
from afbackup.config.units import format_duration
from afbackup.errors import ExitCode, UsageError
from afbackup.lock import StoreLock, break_lock, describe_holder
from afbackup.manifest import iso
from afbackup.pins import pin_backup, unpin_backup
from afbackup.prune import DELETE, PrunePlan, PruneResult, execute_prune, plan_prune, require_policy
from afbackup.storage import open_store
from afbackup.trust import Trust


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing (the default).")
@click.option("--confirm", is_flag=True, help="Delete what the plan says (takes the writer lock).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (and what was done) as JSON.")
@pass_app
def prune(app: AppContext, dry_run: bool, confirm: bool, as_json: bool) -> int:
    """Apply the [retention] policy and clean up failed attempts; a dry run unless --confirm."""
    if dry_run and confirm:
        raise UsageError("--dry-run and --confirm exclude each other")
    cfg = app.settings().config
    require_policy(cfg.retention)  # refuse before taking the lock or reading anything
    store = open_store(cfg.storage)
    trust = Trust.from_config(cfg)
    if not confirm:
        plan = plan_prune(store, cfg.retention, app.clock.now(), trust=trust)
        _report(plan, None, as_json)
        return 0
    with StoreLock(store, "prune", ttl=cfg.backup.lock_ttl, clock=app.clock.now) as lock:
        plan = plan_prune(store, cfg.retention, app.clock.now(), lock, trust=trust)
        result = execute_prune(store, plan, lock=lock)
    app.record(extra={"deleted": len(result.deleted), "kept": len(plan.backups) - len(result.deleted),
                      "cleaned": len(result.cleaned), "locked": len(result.locked), "failures": len(result.failures)})
    _report(plan, result, as_json)
    if not result.ok:
        keys = ", ".join(f.key for f in result.failures[:10]) + (" …" if len(result.failures) > 10 else "")
        app.fail(f"prune could not delete {len(result.failures)} object(s): {keys}", ExitCode.STORAGE)
    return 0


def _report(plan: PrunePlan, result: PruneResult | None, as_json: bool) -> None:
    if as_json:
        emit_json({"dry_run": result is None, "plan": plan.as_dict(), "result": result.as_dict() if result else None})
        return
    for line in plan_lines(plan):
        emit(line)
    emit(_summary(plan) if result is None else result_line(plan, result))
    for locked in (result.locked if result else []):
        emit(f"NOT deleted, under Object Lock ({locked.mode}) until {iso(locked.until)}: {locked.backup_id}")


def plan_lines(plan: PrunePlan) -> list[str]:
    """The plan as people read it: every backup with its action and every reason."""
    rules = ", ".join(f"{name} {value}" for name, value in vars(plan.policy).items() if value)
    lines = [f"policy: {rules}; attempts and uploads older than {format_duration(plan.incomplete_after)} "
             "are cleaned up"]
    if plan.holder:
        lines.append(f"lock: held by {describe_holder(plan.holder)}")
    lines.append(f"{'BACKUP ID':<24} {'FINISHED':<25} {'ACTION':<7} WHY")
    lines += [f"{i.backup_id:<24} {iso(i.finished_at) or '-':<25} {i.action:<7} {'; '.join(i.reasons)}"
              for i in plan.backups] or ["(no complete backups)"]
    if plan.attempts:
        lines.append("attempts without a manifest (failed or killed runs):")
        lines += [f"{i.backup_id:<24} {i.state:<25} {i.action:<7} {'; '.join(i.reasons)}" for i in plan.attempts]
    if plan.uploads:
        lines.append("unfinished uploads:")
        lines += [f"{u.upload.key}  {'abort' if u.abort else 'keep'}  {u.reason}" for u in plan.uploads]
    if plan.damaged:
        lines.append("untrusted or damaged backups (reported, never deleted automatically):")
        lines += [f"{i.backup_id:<24} {'; '.join(i.reasons)}" for i in plan.damaged]
    if plan.unexpected_tombstones:
        lines.append("unexpected prune tombstones (deleting.json) next to kept backups, ignored (not written by "
                     "this prune's plan):")
        lines += [f"{backup_id:<24} kept, listed and restorable" for backup_id in plan.unexpected_tombstones]
    return lines


def _counts(plan: PrunePlan) -> tuple[int, int, int, int]:
    backups = sum(1 for i in plan.backups if i.action == DELETE)
    attempts = sum(1 for i in plan.attempts if i.action == DELETE)
    objects = sum(len(i.keys) for i in plan.deletions)
    return backups, attempts, objects, sum(1 for u in plan.uploads if u.abort)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _summary(plan: PrunePlan) -> str:
    backups, attempts, objects, uploads = _counts(plan)
    return (f"dry run: would delete {backups} of {_n(len(plan.backups), 'backup')} and "
            f"{_n(attempts, 'failed or killed attempt')} ({_n(objects, 'object')}), abort {_n(uploads, 'upload')}; "
            "nothing was changed (run with --confirm to delete)")


def result_line(plan: PrunePlan, result: PruneResult) -> str:
    kept = len(plan.backups) - len(result.deleted)
    return (f"deleted {_n(len(result.deleted), 'backup')} and {_n(len(result.cleaned), 'failed or killed attempt')}"
            f" ({_n(result.objects, 'object')}), aborted {_n(len(result.aborted), 'upload')}; "
            f"{_n(kept, 'backup')} remain"
            + (f"; {len(result.locked)} skipped under Object Lock" if result.locked else "")
            + (f"; {len(result.pinned)} pinned meanwhile" if result.pinned else ""))


@click.command()
@click.argument("backup_ref", metavar="BACKUP")
@click.option("--reason", default="", metavar="TEXT", help="Why it is kept (recorded in the pin).")
@pass_app
def pin(app: AppContext, backup_ref: str, reason: str) -> int:
    """Keep a complete backup (an id or `latest`) forever: prune never deletes a pinned backup."""
    cfg = app.settings().config
    outcome = pin_backup(open_store(cfg.storage), backup_ref, reason=reason, trust=Trust.from_config(cfg))
    if outcome.changed:
        emit(f"pinned {outcome.backup_id}")
    else:
        emit(f"{outcome.backup_id} was already pinned by {outcome.record.get('pinned_by', '?')} "
             f"at {outcome.record.get('pinned_at', '?')}")
    return 0


@click.command()
@click.argument("backup_id", metavar="BACKUP")
@pass_app
def unpin(app: AppContext, backup_id: str) -> int:
    """Remove the pin of a backup: retention applies to it again."""
    outcome = unpin_backup(open_store(app.settings().config.storage), backup_id)
    emit(f"unpinned {backup_id}" if outcome.changed else f"{backup_id} was not pinned")
    return 0


@click.command("break-lock")
@click.option("--yes", is_flag=True, help="Really remove the lock (only a stale one, unless --force).")
@click.option("--force", is_flag=True, help="With --yes: remove even a live lock (its holder aborts).")
@pass_app
def break_lock_command(app: AppContext, yes: bool, force: bool) -> int:
    """Remove the writer lock left by a dead run, logging whose it was."""
    if force and not yes:
        raise UsageError("--force needs --yes")
    store = open_store(app.settings().config.storage)
    outcome = break_lock(store, yes=yes, force=force, now=app.clock.now())
    if outcome.holder is None:
        emit(f"no lock is held on {store.describe()}")
        return 0
    state = "stale" if outcome.stale else "LIVE"
    if not yes:
        emit(f"{state} lock held by {describe_holder(outcome.holder)}")
        raise UsageError("break-lock removes the lock only with --yes",
                         hint="check that its holder is dead first" if not outcome.stale else "")
    emit(f"removed the {state} lock held by {describe_holder(outcome.holder)}")
    return 0
