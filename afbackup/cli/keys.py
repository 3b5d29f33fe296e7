"""``afbackup keys init``: create the encryption and signing key pairs, split between two keyrings."""

from __future__ import annotations

import click

from afbackup.cli.context import AppContext, emit, emit_json, pass_app
from afbackup.errors import UsageError
from afbackup.keys import init_keys, instructions
from afbackup.sources.postgres import password_from_file


@click.group()
def keys() -> None:
    """Key management."""


@keys.command("init")
@click.option("--backup-gnupghome", required=True, metavar="DIR",
              help="Keyring of the backup side: gets the signing private key and the encryption public key.")
@click.option("--restore-gnupghome", required=True, metavar="DIR",
              help="Keyring of the restore side: gets the decryption private key and the signing public key.")
@click.option("--deployment", default="airflow", show_default=True, metavar="NAME",
              help="The deployment's name ([backup] name), used in the key names and the snippet.")
@click.option("--expire", default="2y", show_default=True, metavar="WHEN",
              help="Key expiry as gpg takes it (2y, 18m, never).")
@click.option("--passphrase-file", default="", metavar="FILE", help="Protect both private keys with this passphrase.")
@click.option("--no-passphrase", is_flag=True, help="Leave the private keys unprotected (explicit).")
@click.option("--json", "as_json", is_flag=True, help="Print the fingerprints as JSON.")
@pass_app
def init(app: AppContext, backup_gnupghome: str, restore_gnupghome: str, deployment: str, expire: str,
         passphrase_file: str, no_passphrase: bool, as_json: bool) -> int:
    """Create the encryption and signing key pairs; print which private key goes where and the config."""
    if bool(passphrase_file) == no_passphrase:
        raise UsageError("pass exactly one of --passphrase-file FILE and --no-passphrase",
                         hint="a passphrase protects the private keys at rest")
    passphrase = password_from_file(passphrase_file, "--passphrase-file") if passphrase_file else None
    split = init_keys(backup_gnupghome, restore_gnupghome, deployment=deployment, expire=expire,
                      passphrase=passphrase)
    if as_json:
        emit_json(split.as_dict())
    else:
        emit(instructions(split, protected=passphrase is not None))
    return 0
