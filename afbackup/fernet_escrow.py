"""The source Fernet key's own audience (``encryption.fernet_recipients``).

The archive carries the source deployment's Fernet key(s) (``airflow/fernet.json``), which can decrypt the live
database's connections and variables forever. When ``fernet_recipients`` names keys other than the archive's
recipients, that member is encrypted again, to those keys only, and stored as ``airflow/fernet.json.gpg``: whoever
can decrypt the archive (a CI drill keyring, say) can then not read the production Fernet key. Without
``fernet_recipients`` (the default: the archive's recipients) the member stays as before, so break-glass restores
with standard tools keep working.

``unseal`` decrypts it in memory (never on disk) for restore; the drill uses ``--fernet-key-file`` (the escrowed
key) or, when its keyring cannot decrypt the member, skips that check and says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from afbackup.config.model import EncryptionConfig
from afbackup.crypto import Gpg
from afbackup.errors import CryptoError

PLAIN = "fernet.json"
SEALED = "fernet.json.gpg"
MEMBER, SEALED_MEMBER = f"airflow/{PLAIN}", f"airflow/{SEALED}"


def audience(enc: EncryptionConfig) -> tuple[str, ...]:
    """Who can read the source Fernet key: ``fernet_recipients``, else () meaning the archive's recipients."""
    if enc.fernet_recipients and set(enc.fernet_recipients) != set(enc.recipients):
        return enc.fernet_recipients
    return ()


def seal(secret_members: Mapping[str, bytes], enc: EncryptionConfig, gpg: Gpg) -> dict[str, bytes]:
    """The secret members as they go into the archive (the Fernet key sealed to its own audience, if any)."""
    members = dict(secret_members)
    recipients = audience(enc)
    if recipients and PLAIN in members:
        members[SEALED] = gpg.encrypt_bytes(members.pop(PLAIN), recipients)
    return members


class FernetKeyUnreadable(CryptoError):
    """This keyring cannot decrypt the sealed source Fernet key."""


def unseal(members: dict[str, bytes], gpg: Gpg) -> bool:
    """Put the decrypted Fernet key member in ``members`` (in memory); False when there is none to unseal."""
    if SEALED_MEMBER not in members:
        return False
    try:
        members[MEMBER] = gpg.decrypt_bytes(members[SEALED_MEMBER], "the archive's sealed source Fernet key")
    except CryptoError as exc:
        raise FernetKeyUnreadable(exc.message, hint="the source Fernet key is encrypted to "
                                  "encryption.fernet_recipients: use a keyring holding one of those keys, or "
                                  "pass the escrowed key (drill --fernet-key-file)") from None
    return True
