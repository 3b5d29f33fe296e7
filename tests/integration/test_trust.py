"""Real gpg: the key split of ``afbackup keys init``, expired and revoked signers, ``Gpg.key_expires_at``."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from afbackup.config.model import EncryptionConfig
from afbackup.crypto import Gpg
from afbackup.errors import CryptoError
from tests.harness.gpgkeys import KeyRing, new_home

DATA = b'{"backup_id": "20261207T000000Z-abcdef"}\n'


@pytest.fixture
def homes():
    made: list[KeyRing] = []

    def make() -> KeyRing:
        made.append(KeyRing(new_home(), {}))
        return made[-1]

    yield make
    for ring in made:
        ring.cleanup()


def _afbackup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "afbackup", *args], capture_output=True, text=True, timeout=300)


def _secret(ring: KeyRing) -> set[str]:
    out = ring.gpg("--with-colons", "--list-secret-keys").stdout.decode()
    return {line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")}


def _primaries(ring: KeyRing, secret: bool = False) -> set[str]:
    out = ring.gpg("--with-colons", "--list-secret-keys" if secret else "--list-keys").stdout.decode()
    lines = out.splitlines()
    return {lines[i + 1].split(":")[9] for i, line in enumerate(lines)
            if line.startswith(("pub:", "sec:")) and i + 1 < len(lines) and lines[i + 1].startswith("fpr:")}


def test_keys_init_splits_the_keys_and_the_split_works(homes, tmp_path):
    # GIVEN two empty keyrings and a passphrase file
    backup, restore = homes(), homes()
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse\n")
    # WHEN keys init runs
    done = _afbackup("keys", "init", "--backup-gnupghome", str(backup.home), "--restore-gnupghome", str(restore.home),
                     "--deployment", "prod", "--passphrase-file", str(passphrase), "--json")
    assert done.returncode == 0, done.stderr
    split = json.loads(done.stdout)
    enc, sig = split["encryption_fingerprint"], split["signing_fingerprint"]
    # THEN the backup side holds the signing private key and only the PUBLIC encryption key; the restore side the
    # decryption private key and only the PUBLIC signing key; the passphrase never was on an argv
    assert _primaries(backup, secret=True) == {sig} and _primaries(backup) == {sig, enc}
    assert _primaries(restore, secret=True) == {enc} and _primaries(restore) == {sig, enc}
    assert "correct horse" not in done.stdout + done.stderr
    # AND the backup side can encrypt and sign, the restore side decrypt and verify; the backup side cannot decrypt
    pod = Gpg(EncryptionConfig(gnupghome=str(backup.home), recipients=(enc,), sign_with=sig,
                               passphrase_file=str(passphrase)))
    operator = Gpg(EncryptionConfig(gnupghome=str(restore.home), recipients=(enc,), trusted_signers=(sig,),
                                    passphrase_file=str(passphrase)))
    pod.check_recipients([enc])
    pod.check_signer(sig)
    ciphertext = pod.encrypt_bytes(DATA, [enc])
    assert operator.decrypt_bytes(ciphertext, "payload") == DATA
    assert operator.verify_detached(DATA, pod.sign_detached(DATA, sig), [sig], "payload") == sig
    with pytest.raises(CryptoError):
        pod.decrypt_bytes(ciphertext, "payload")
    # AND the human output says which private key goes where and gives both [encryption] snippets
    text = _afbackup("keys", "init", "--backup-gnupghome", str(homes().home), "--restore-gnupghome",
                     str(homes().home), "--no-passphrase")
    assert text.returncode == 0, text.stderr
    assert "private key: ONLY in" in text.stdout and text.stdout.count("[encryption]") == 2


def test_keys_init_refuses_one_keyring_for_both_sides_and_an_implicit_passphrase_choice(homes):
    ring = homes()
    same = _afbackup("keys", "init", "--backup-gnupghome", str(ring.home), "--restore-gnupghome", str(ring.home),
                     "--no-passphrase")
    assert same.returncode == 2 and "must be different directories" in same.stderr
    implicit = _afbackup("keys", "init", "--backup-gnupghome", str(ring.home), "--restore-gnupghome",
                         str(homes().home))
    assert implicit.returncode == 2 and "--no-passphrase" in implicit.stderr
    assert _secret(ring) == set()


def _key(ring: KeyRing, uid: str, at: dt.datetime, expire: str = "1y") -> str:
    ring.gpg("--faked-system-time", f"{int(at.timestamp())}!", "--passphrase", "", "--pinentry-mode", "loopback",
             "--quick-gen-key", uid, "ed25519", "sign", expire)
    out = ring.gpg("--with-colons", "--list-keys", uid).stdout.decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def _sign(ring: KeyRing, fpr: str, at: dt.datetime) -> bytes:
    return ring.gpg("--faked-system-time", f"{int(at.timestamp())}!", "--local-user", fpr, "--detach-sign",
                    input=DATA).stdout


def test_an_expired_key_keeps_its_old_signatures_and_key_expires_at_says_when(homes):
    ring = homes()
    created = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)
    fpr = _key(ring, "expired <expired@afbackup.invalid>", created, "2d")
    gpg = Gpg(EncryptionConfig(gnupghome=str(ring.home)))
    expires = gpg.key_expires_at(fpr)
    assert expires is not None and abs((expires - (created + dt.timedelta(days=2))).total_seconds()) < 5
    assert gpg.verify_detached(DATA, _sign(ring, fpr, created + dt.timedelta(hours=1)), [fpr], "old") == fpr
    with pytest.raises(CryptoError, match="not in the keyring"):
        gpg.key_expires_at("0" * 40)


def test_a_revoked_key_is_untrusted_from_its_revocation_on(homes):
    # GIVEN a key made 3 days ago, a signature from before its revocation (2 days ago) and one from after it
    ring = homes()
    created = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)
    fpr = _key(ring, "revoked <revoked@afbackup.invalid>", created)
    before = _sign(ring, fpr, created + dt.timedelta(hours=1))
    after = _sign(ring, fpr, created + dt.timedelta(days=2))
    revoked_at = created + dt.timedelta(days=1)
    cert = ring.home / "revocation.asc"
    subprocess.run(["gpg", "--homedir", str(ring.home), "--yes", "--no-tty", "--faked-system-time",
                    f"{int(revoked_at.timestamp())}!", "--command-fd", "0", "--pinentry-mode", "loopback",
                    "--passphrase", "", "--armor", "--output", str(cert), "--gen-revoke", fpr],
                   input=b"y\n0\n\ny\n", capture_output=True, check=True)
    ring.gpg("--import", str(cert))
    gpg = Gpg(EncryptionConfig(gnupghome=str(ring.home)))
    # THEN the older signature still verifies, the later one is refused
    assert gpg.key_revoked_at(fpr) == revoked_at
    assert gpg.verify_detached(DATA, before, [fpr], "before") == fpr
    with pytest.raises(CryptoError, match="revoked"):
        gpg.verify_detached(DATA, after, [fpr], "after")
