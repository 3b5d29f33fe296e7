"""The drill pod spools the decrypted dump to a disk-backed volume sized from the documented figure.

docs/configuration.md, "Spool space": the spool needs the dump's size + 1 MiB; a memory-backed spool counts
against the pod's memory limit, so a large dump would get the pod OOM-killed instead of failing with exit 4.
"""

from __future__ import annotations

from afbackup.config.units import parse_size
from tests.deploy.test_manifests import cronjob, pod_spec


def test_the_drill_spools_to_a_disk_backed_emptydir_with_a_size_limit():
    spec = pod_spec(cronjob("drill"))
    (container,) = [c for c in spec["containers"] if c["name"] == "afbackup"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    spool_dir = env["AFBACKUP_RESTORE_SPOOL_DIR"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == spool_dir]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert "medium" not in volume["emptyDir"]  # on the node's disk, not in the pod's memory
    assert parse_size(volume["emptyDir"]["sizeLimit"].replace("Gi", "GiB")) >= 8 * 2**30
    # the memory-backed /tmp stays small: the keyring, the password file and the report, no dump
    tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
    assert parse_size(tmp["emptyDir"]["sizeLimit"].replace("Mi", "MiB")) <= 64 * 2**20
