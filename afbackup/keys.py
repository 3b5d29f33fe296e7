"""``afbackup keys init``: the key split, from nothing.

Two key pairs, in two keyrings that never hold each other's private key:

- the ENCRYPTION key pair: its private key (the only one that can decrypt a
  backup) is created in the restore side's keyring; the backup side gets its
  public key only;
- the SIGNING key pair: its private key (the only one that can make a backup
  trusted) is created in the backup side's keyring; the restore side gets its
  public key only.

Private keys are protected by the passphrase read from ``--passphrase-file``
(handed to gpg on stdin, never on its argv), or explicitly unprotected with
``--no-passphrase`` (for keyrings that live in a Kubernetes Secret anyway).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from afbackup.errors import ConfigError, CryptoError, UsageError

GPG_TIMEOUT = 120


@dataclasses.dataclass(frozen=True)
class KeySplit:
    encryption: str  # fingerprint of the encryption key pair
    signing: str  # fingerprint of the signing key pair
    backup_home: Path
    restore_home: Path
    expire: str
    deployment: str

    def as_dict(self) -> dict[str, str]:
        return {"encryption_fingerprint": self.encryption, "signing_fingerprint": self.signing,
                "backup_gnupghome": str(self.backup_home), "restore_gnupghome": str(self.restore_home),
                "expire": self.expire, "deployment": self.deployment}


def init_keys(backup_home: str, restore_home: str, *, deployment: str, expire: str,
              passphrase: str | None) -> KeySplit:
    """Create both key pairs and distribute the public halves. ``passphrase`` None: unprotected keys."""
    backup, restore = _home(backup_home), _home(restore_home)
    if backup.resolve() == restore.resolve():
        raise UsageError("the backup and restore keyrings must be different directories",
                         hint="the backup side must never hold the decryption key")
    gpg = shutil.which("gpg")
    if gpg is None:
        raise ConfigError("gpg is not installed", hint="install GnuPG >= 2.1")
    enc = _generate(gpg, restore, f"afbackup encryption ({deployment})", "cert", expire, passphrase)
    _run(gpg, restore, ["--quick-add-key", enc, "cv25519", "encr", expire], passphrase)
    sig = _generate(gpg, backup, f"afbackup signing ({deployment})", "sign", expire, passphrase)
    _run(gpg, backup, ["--import"], stdin=_run(gpg, restore, ["--export", enc]))
    _run(gpg, restore, ["--import"], stdin=_run(gpg, backup, ["--export", sig]))
    return KeySplit(enc, sig, backup, restore, expire, deployment)


def _home(path: str) -> Path:
    home = Path(path).expanduser()
    if not home.is_absolute():
        home = Path.cwd() / home
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create the keyring directory {home}: {exc.strerror}") from None
    return home


def _generate(gpg: str, home: Path, uid: str, usage: str, expire: str, passphrase: str | None) -> str:
    out = _run(gpg, home, ["--status-fd", "1", "--quick-gen-key", uid, "ed25519", usage, expire], passphrase)
    for line in out.decode(errors="replace").splitlines():
        parts = line.split()
        if parts[:2] == ["[GNUPG:]", "KEY_CREATED"] and len(parts) >= 4:
            return parts[3].upper()
    raise CryptoError(f"gpg created no key {uid!r} in {home}")


def _run(gpg: str, home: Path, args: list[str], passphrase: str | None = "", *, stdin: bytes | None = None) -> bytes:
    """gpg in ``home``; a passphrase goes on stdin (``--passphrase-fd 0``), never on the argv."""
    argv = [gpg, "--homedir", str(home), "--batch", "--yes", "--no-tty"]
    data = stdin
    if stdin is None:
        argv += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
        data = ((passphrase or "") + "\n").encode()
    try:
        done = subprocess.run(argv + args, input=data, capture_output=True, timeout=GPG_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CryptoError(f"gpg {args[0]} failed: {exc}") from None
    if done.returncode != 0:
        tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-2:])
        raise CryptoError(f"gpg {args[0]} in {home} failed: {tail}", hint="check the directory and gpg-agent")
    return done.stdout


def instructions(split: KeySplit, *, protected: bool) -> str:
    """What to do with the keys, and the [encryption] snippets to paste."""
    passphrase = '\npassphrase_file = "/run/secrets/afbackup/passphrase"' if protected else ""
    return f"""\
encryption key {split.encryption}
  private key: ONLY in {split.restore_home} (the restore side: restore, verify, drill). Keep an offline copy:
    gpg --homedir {split.restore_home} --export-secret-keys --armor {split.encryption} > encryption-key.asc
signing key    {split.signing}
  private key: ONLY in {split.backup_home} (the backup pod). Without it nobody can make a backup afbackup trusts.
public keys: {split.backup_home} holds the encryption PUBLIC key, {split.restore_home} the signing PUBLIC key.
both keys expire in {split.expire}; `afbackup check` warns 30 days ahead (gpg --quick-set-expire to extend).

# backup side ({split.backup_home})
[backup]
name = "{split.deployment}"

[encryption]
gnupghome = "{split.backup_home}"
recipients = ["{split.encryption}"]
sign_with = "{split.signing}"
trusted_signers = ["{split.signing}"]{passphrase}

# restore side ({split.restore_home})
[backup]
name = "{split.deployment}"

[encryption]
gnupghome = "{split.restore_home}"
recipients = ["{split.encryption}"]
trusted_signers = ["{split.signing}"]{passphrase}
"""
