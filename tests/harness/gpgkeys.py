"""Throwaway OpenPGP keys in a private, short-path GNUPGHOME (long paths break gpg-agent's socket)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


@dataclasses.dataclass
class KeyRing:
    home: Path
    fingerprints: dict[str, str]  # name -> fingerprint

    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}

    def gpg(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes", *args],
                              input=input, capture_output=True, check=check)

    def export_public(self, name: str) -> bytes:
        return self.gpg("--export", self.fingerprints[name]).stdout

    def export_secret(self, name: str) -> bytes:
        return self.gpg("--export-secret-keys", self.fingerprints[name]).stdout

    def public_only_copy(self, names: list[str], base: str | None = None) -> KeyRing:
        """A keyring holding only the public keys of ``names`` (like a backup pod's)."""
        other = new_home(base)
        for name in names:
            subprocess.run(["gpg", "--homedir", str(other), "--batch", "--import"], input=self.export_public(name),
                           capture_output=True, check=True)
        return KeyRing(other, {n: self.fingerprints[n] for n in names})

    def cleanup(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def new_home(base: str | None = None) -> Path:
    home = Path(tempfile.mkdtemp(prefix="g", dir=base or "/tmp"))
    os.chmod(home, 0o700)
    # s2k-count: a low key-protection work factor, or generating a passphrase-protected test key takes seconds.
    (home / "gpg-agent.conf").write_text("default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n"
                                         "s2k-count 65536\n")
    return home


def make_keyring(names: tuple[str, ...] = ("backup", "signer", "stranger"), base: str | None = None,
                 passphrase: str | None = None) -> KeyRing:
    """Generate one ed25519/cv25519 key per name (fast); ``passphrase`` protects them all if given."""
    home = new_home(base)
    ring = KeyRing(home, {})
    for name in names:
        protection = ["--passphrase", passphrase, "--pinentry-mode", "loopback"] if passphrase \
            else ["--passphrase", "", "--pinentry-mode", "loopback"]
        uid = f"afbackup test {name} <{name}@afbackup.invalid>"
        ring.gpg(*protection, "--quick-gen-key", uid, "ed25519", "sign", "1y")
        fpr = _fingerprint(ring, uid)
        ring.gpg(*protection, "--quick-add-key", fpr, "cv25519", "encr", "1y")
        ring.fingerprints[name] = fpr
    return ring


def _fingerprint(ring: KeyRing, uid: str) -> str:
    out = ring.gpg("--with-colons", "--list-keys", uid).stdout.decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
