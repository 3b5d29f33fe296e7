"""The shipped IAM and bucket policies enforce the trust model (docs/security.md, "Least privilege").

The writer (backup pod) cannot overwrite a committed object (manifest, signature, attempt and failure
records: ``s3:if-none-match`` must be present, i.e. a create-only PUT), cannot write prune's tombstone and
cannot delete anything but its lock; the bucket policy repeats that for every principal except the prune role,
and refuses plain HTTP. The object names are afbackup's own (``afbackup.manifest``), so a renamed object fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from afbackup import manifest as mf

IAM = Path(__file__).resolve().parents[2] / "deploy" / "iam"
BUCKET = "arn:aws:s3:::airflow-backups"
PREFIX = f"{BUCKET}/prod"
COMMITTED = [f"{PREFIX}/{mf.BACKUPS}*/{name}" for name in (mf.MANIFEST_NAME, mf.SIGNATURE_NAME, mf.ATTEMPT_NAME,
                                                            mf.FAILED_NAME)]
TOMBSTONE = f"{PREFIX}/{mf.BACKUPS}*/{mf.DELETING_NAME}"
PRUNE_ROLE = "arn:aws:iam::123456789012:role/afbackup-prune"


def load(name: str) -> dict[str, Any]:
    return json.loads((IAM / name).read_text())


def listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def statement(doc: dict[str, Any], sid: str) -> dict[str, Any]:
    (found,) = [s for s in doc["Statement"] if s.get("Sid") == sid]
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in IAM.glob("*.json")))
def test_every_policy_is_valid_json_with_unique_sids(name):
    doc = load(name)
    if "Statement" in doc:
        assert doc["Version"] == "2012-10-17"
        sids = [s["Sid"] for s in doc["Statement"]]
        assert len(sids) == len(set(sids)), sids
        assert all(s["Effect"] in ("Allow", "Deny") for s in doc["Statement"])


def test_the_writer_cannot_overwrite_committed_objects():
    deny = statement(load("backup-writer-policy.json"), "NeverOverwriteCommittedObjects")
    assert deny["Effect"] == "Deny" and listed(deny["Action"]) == ["s3:PutObject"]
    assert set(COMMITTED) <= set(listed(deny["Resource"]))
    assert deny["Condition"] == {"Null": {"s3:if-none-match": "true"}}


def test_the_writer_cannot_plant_a_tombstone_or_delete_backups():
    doc = load("backup-writer-policy.json")
    tombstones = statement(doc, "NeverWritePruneTombstones")
    assert tombstones["Effect"] == "Deny" and "Condition" not in tombstones
    assert listed(tombstones["Resource"]) == [TOMBSTONE] and listed(tombstones["Action"]) == ["s3:PutObject"]
    deletes = [s for s in doc["Statement"] if s["Effect"] == "Allow" and "s3:DeleteObject" in listed(s["Action"])]
    assert [listed(s["Resource"]) for s in deletes] == [[f"{PREFIX}/{mf.LOCKS}*"]]


def test_the_bucket_policy_enforces_the_same_for_every_principal_but_prune():
    doc = load("bucket-policy.json")
    assert all(s["Effect"] == "Deny" and s["Principal"] == "*" for s in doc["Statement"])
    tls = statement(doc, "DenyInsecureTransport")
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    deletes = statement(doc, "OnlyPruneDeletesBackups")
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(listed(deletes["Action"]))
    assert f"{PREFIX}/{mf.BACKUPS}*" in listed(deletes["Resource"])
    assert deletes["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": PRUNE_ROLE}}
    tombstones = statement(doc, "OnlyPruneWritesTombstones")
    assert listed(tombstones["Resource"]) == [TOMBSTONE]
    assert tombstones["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": PRUNE_ROLE}}
    overwrite = statement(doc, "NeverOverwriteCommittedObjects")
    assert set(COMMITTED) <= set(listed(overwrite["Resource"]))
    assert overwrite["Condition"] == {"Null": {"s3:if-none-match": "true"}} and "ArnNotEquals" not in json.dumps(
        overwrite)
    for s in doc["Statement"]:
        assert all(r == BUCKET or r.startswith(f"{BUCKET}/") for r in listed(s["Resource"])), s["Sid"]


def test_prune_may_delete_but_the_writer_policy_still_denies_it_everywhere_else():
    writer = load("backup-writer-policy.json")
    deny = next(s for s in writer["Statement"] if s["Effect"] == "Deny")
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(listed(deny["Action"]))
    assert deny["NotResource"] == [f"{PREFIX}/{mf.LOCKS}*"]
