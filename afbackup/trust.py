"""Which backups afbackup trusts: a signed manifest, read once, of this deployment.

Every command that reads backups (list, show, latest, verify, restore, drill,
prune, check, pin) decides trust the same way, here:

- the manifest is read ONCE (one GET; its ETag and version id come from the
  same response) and exactly those bytes are parsed and checked against the
  detached signature, so a manifest swapped between two reads cannot slip in;
- the signature must be made by a key in ``encryption.trusted_signers``
  (default: ``sign_with``). Without ``require_signature = false`` an unsigned
  manifest is untrusted; with it, every run warns;
- the manifest must name this deployment (``[backup] name``), unless the
  command was told the source deployment explicitly (``--source-deployment``).

Untrusted backups are listed by ``list --all`` with the reason, never chosen
by ``latest``, never counted (``check``, retention) and never deleted.
"""

from __future__ import annotations

import dataclasses
import logging

from afbackup import manifest as mf
from afbackup.config.model import Config, EncryptionConfig
from afbackup.crypto import Gpg
from afbackup.errors import ConfigError, CryptoError, IntegrityError, NotFoundError
from afbackup.storage.base import ObjectStore, StoredObject

logger = logging.getLogger(__name__)

OPT_OUT_WARNING = ("encryption.require_signature = false: unsigned manifests are trusted, so anyone who can write "
                   "to the bucket can plant a backup that restore runs; sign backups (`afbackup keys init`)")


def require_signing(enc: EncryptionConfig) -> None:
    """A backup configuration must sign its manifests, unless ``require_signature = false`` (exit 3)."""
    if enc.recipients and not enc.sign_with and enc.signatures_required:
        raise ConfigError("encryption.sign_with is not set: backups would be unsigned, and unsigned backups are "
                          "refused", hint="create a signing key (`afbackup keys init`) and set sign_with, or set "
                                          "encryption.require_signature = false explicitly (unsafe)")


class ForeignBackupError(IntegrityError):
    """A validly signed backup of another deployment (exit 8)."""


@dataclasses.dataclass(frozen=True)
class Trusted:
    """A manifest that passed: the bytes read, where they came from, and who signed them."""

    manifest: mf.Manifest
    version_id: str
    etag: str
    signer: str  # "" when unsigned (only with require_signature = false)


@dataclasses.dataclass(frozen=True)
class Trust:
    """How manifests are judged; built once per command by ``from_config``."""

    signers: tuple[str, ...]
    required: bool
    deployment: str
    gpg: Gpg | None = None
    explicit_deployment: bool = False

    @classmethod
    def from_config(cls, cfg: Config, *, source_deployment: str = "") -> Trust:
        """The configured trust; a config that can trust nothing is refused (exit 3)."""
        enc = cfg.encryption
        if enc.signatures_required and not enc.signers:
            raise ConfigError("no trusted signing key: encryption.trusted_signers (or sign_with) is empty, and "
                              "unsigned backups are refused",
                              hint="set trusted_signers to the signing key's fingerprint (`afbackup keys init`), or "
                                   "set encryption.require_signature = false to trust unsigned backups (unsafe)")
        if not enc.signatures_required:
            logger.warning(OPT_OUT_WARNING)
        return cls(enc.signers, enc.signatures_required, source_deployment or cfg.backup.name,
                   Gpg(enc) if enc.signers else None, bool(source_deployment))

    def check(self, store: ObjectStore, backup_id: str) -> Trusted:
        """Read, verify and return the manifest of ``backup_id``.

        Raises ``CryptoError`` (exit 7: unsigned, bad or untrusted signature),
        ``ForeignBackupError`` (exit 8: another deployment) or ``IntegrityError``
        (exit 8: missing or damaged manifest).
        """
        data, stored, manifest = read_manifest_once(store, backup_id)
        key = mf.key_of(backup_id, mf.MANIFEST_NAME)
        signer = self._signer(store, backup_id, data, key)
        if manifest.deployment_name != self.deployment:
            how = ("--source-deployment names " if self.explicit_deployment else "this is ") + self.deployment
            raise ForeignBackupError(f"backup {backup_id} belongs to deployment {manifest.deployment_name}, {how}",
                                     hint=f"to use it deliberately (a migration), pass --source-deployment "
                                          f"{manifest.deployment_name}")
        return Trusted(manifest, stored.version_id, stored.etag, signer)

    def _signer(self, store: ObjectStore, backup_id: str, data: bytes, key: str) -> str:
        try:
            signature = store.get_bytes(mf.key_of(backup_id, mf.SIGNATURE_NAME), limit=1 << 20)
        except NotFoundError:
            if self.required:
                raise CryptoError(f"{key} is not signed, and signatures are required",
                                  hint="only backups signed by a key in encryption.trusted_signers are trusted") \
                    from None
            return ""
        if not self.signers or self.gpg is None:
            return ""  # require_signature = false and nobody to check against (warned once per run)
        return self.gpg.verify_detached(data, signature, self.signers, key)


def read_manifest_once(store: ObjectStore, backup_id: str) -> tuple[bytes, StoredObject, mf.Manifest]:
    """One GET of the manifest; the bytes, what the store said about them, and the parsed manifest."""
    key = mf.key_of(backup_id, mf.MANIFEST_NAME)
    data, stored = store.get_object(key)
    manifest = mf.parse_manifest(data, key)
    if manifest.backup_id != backup_id:
        raise IntegrityError(f"{key} describes backup {manifest.backup_id}, not {backup_id}",
                             hint="the manifest was moved or replaced")
    return data, stored, manifest


def unchecked(store: ObjectStore, backup_id: str) -> Trusted:
    """Parse without judging (library callers and tests that pass no ``Trust``)."""
    _, stored, manifest = read_manifest_once(store, backup_id)
    return Trusted(manifest, stored.version_id, stored.etag, "")
