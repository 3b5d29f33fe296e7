"""OpenPGP with real gpg and throwaway keys: key preflight, detached signatures, streaming encrypt/decrypt."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import threading

import pytest

from afbackup.config.model import EncryptionConfig
from afbackup.crypto import Gpg, GpgStream
from afbackup.errors import ConfigError, CryptoError, SourceError
from afbackup.streams import HashingReader, reader_from_iter, reader_from_queue
from tests.harness.gpgkeys import KeyRing, make_keyring

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg not installed")

PASSPHRASE = "correct horse battery staple"
MIB = 1 << 20


@pytest.fixture(scope="module")
def ring():
    """Secret + public keys of backup, signer, stranger (short /tmp path: the agent socket)."""
    keys = make_keyring(("backup", "signer", "stranger"))
    yield keys
    keys.cleanup()


@pytest.fixture(scope="module")
def public_ring(ring):
    """What a backup pod holds: public keys of backup and signer only, no secret keys."""
    keys = ring.public_only_copy(["backup", "signer"])
    yield keys
    keys.cleanup()


@pytest.fixture(scope="module")
def locked_ring():
    """One key protected by a passphrase.

    make_keyring(passphrase=…) works but costs ~8 s here: gpg-agent calibrates its S2K
    count on first use. A fixed count in gpg-agent.conf keeps it instant.
    """
    keys = make_keyring(())
    with (keys.home / "gpg-agent.conf").open("a") as conf:
        conf.write("s2k-count 65536\n")
    protection = ["--passphrase", PASSPHRASE, "--pinentry-mode", "loopback"]
    uid = "afbackup test locked <locked@afbackup.invalid>"
    keys.gpg(*protection, "--quick-gen-key", uid, "ed25519", "sign", "1d")
    listing = keys.gpg("--with-colons", "--list-keys", uid).stdout.decode()
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    keys.gpg(*protection, "--quick-add-key", fpr, "cv25519", "encr", "1d")
    keys.fingerprints["locked"] = fpr
    yield keys
    keys.cleanup()


def gpg_for(keys: KeyRing, **cfg) -> Gpg:
    return Gpg(EncryptionConfig(gnupghome=str(keys.home), **cfg))


def encrypt(gpg: Gpg, data: bytes, recipients) -> bytes:
    stream = GpgStream(gpg, io.BytesIO(data), threading.Event(), mode="encrypt", recipients=recipients)
    out = reader_from_queue(stream.output, on_eof=stream.check).read()
    return out


def decrypt(gpg: Gpg, ciphertext: bytes) -> tuple[bytes, GpgStream]:
    stream = GpgStream(gpg, io.BytesIO(ciphertext), threading.Event(), mode="decrypt")
    out = reader_from_queue(stream.output).read()
    return out, stream


# -- key preflight -------------------------------------------------------------------------
def test_check_recipients_accepts_present_encryption_keys(ring, public_ring):
    gpg_for(ring).check_recipients([ring.fingerprints["backup"], ring.fingerprints["stranger"]])
    gpg_for(public_ring).check_recipients([ring.fingerprints["backup"]])


def test_check_recipients_missing_key_is_a_crypto_error(ring, public_ring):
    # GIVEN a keyring without the stranger's key
    with pytest.raises(CryptoError) as info:
        gpg_for(public_ring).check_recipients([ring.fingerprints["backup"], ring.fingerprints["stranger"]])
    # THEN the error names the missing fingerprint
    assert ring.fingerprints["stranger"] in info.value.one_line()


def test_check_recipients_empty_is_a_config_error(ring):
    with pytest.raises(ConfigError, match="recipients is empty"):
        gpg_for(ring).check_recipients([])


def test_a_sign_only_key_is_no_recipient(tmp_path):
    keys = make_keyring(())
    try:
        uid = "sign only <sign-only@afbackup.invalid>"
        keys.gpg("--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key", uid, "ed25519", "sign", "1d")
        listing = keys.gpg("--with-colons", "--list-keys", uid).stdout.decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        with pytest.raises(CryptoError, match="no usable encryption"):
            gpg_for(keys).check_recipients([fpr])
    finally:
        keys.cleanup()


def test_check_signer_needs_the_secret_key(ring, public_ring):
    gpg_for(ring).check_signer(ring.fingerprints["signer"])
    with pytest.raises(CryptoError, match="no secret key"):
        gpg_for(public_ring).check_signer(ring.fingerprints["signer"])


def test_gnupghome_must_exist(tmp_path):
    with pytest.raises(CryptoError, match="not a directory"):
        Gpg(EncryptionConfig(gnupghome=str(tmp_path / "missing")))


# -- detached signatures ------------------------------------------------------------------------
MANIFEST = b'{"backup_id": "20261124T040001Z-3f9a1c", "status": "complete"}\n'


@pytest.fixture(scope="module")
def signature(ring) -> bytes:
    return gpg_for(ring).sign_detached(MANIFEST, ring.fingerprints["signer"])


def test_signature_by_a_trusted_signer_verifies(ring, public_ring, signature):
    signer = ring.fingerprints["signer"]
    assert gpg_for(public_ring).verify_detached(MANIFEST, signature, [signer], "manifest.json") == signer


def test_signature_by_an_untrusted_signer_is_refused(ring, public_ring, signature):
    with pytest.raises(CryptoError, match="not in encryption.trusted_signers") as info:
        gpg_for(public_ring).verify_detached(MANIFEST, signature, [ring.fingerprints["backup"]], "manifest.json")
    assert ring.fingerprints["signer"] in info.value.one_line()


def test_signature_over_tampered_data_is_refused(ring, public_ring, signature):
    tampered = MANIFEST.replace(b"complete", b"complet3")
    with pytest.raises(CryptoError, match="not valid"):
        gpg_for(public_ring).verify_detached(tampered, signature, [ring.fingerprints["signer"]], "manifest.json")


def test_signature_by_an_unknown_key_is_refused(ring, public_ring):
    # GIVEN a manifest signed by a key the verifier's keyring does not hold
    foreign = gpg_for(ring).sign_detached(MANIFEST, ring.fingerprints["stranger"])
    with pytest.raises(CryptoError):
        gpg_for(public_ring).verify_detached(MANIFEST, foreign, [ring.fingerprints["stranger"]], "manifest.json")


def test_garbage_signature_is_refused(ring):
    with pytest.raises(CryptoError):
        gpg_for(ring).verify_detached(MANIFEST, b"not a signature", [ring.fingerprints["signer"]], "manifest.json")


# -- streaming encrypt/decrypt ------------------------------------------------------------------
def test_thirty_mib_round_trip_through_streams_is_byte_exact(ring, public_ring):
    # GIVEN ~30 MiB of incompressible data, in uneven chunks
    data = random.Random(42).randbytes(30 * MIB + 12345)
    chunks = (data[pos:pos + 777_777] for pos in range(0, len(data), 777_777))
    cancel = threading.Event()
    source = HashingReader(reader_from_iter(chunks))
    # WHEN it is encrypted with the public keyring and the ciphertext is decrypted as it is produced
    encrypting = GpgStream(gpg_for(public_ring), source, cancel, mode="encrypt",
                           recipients=[ring.fingerprints["backup"]])
    ciphertext = HashingReader(reader_from_queue(encrypting.output, on_eof=encrypting.check))
    decrypting = GpgStream(gpg_for(ring), ciphertext, cancel, mode="decrypt")
    plain = reader_from_queue(decrypting.output).read()
    # THEN both stages succeed and the output is the input, byte for byte
    decrypting.check()
    assert encrypting.verdict() is None
    assert source.size == len(data) and source.hexdigest() == hashlib.sha256(data).hexdigest()
    assert ciphertext.size > len(data)  # --compress-algo none: random data does not shrink
    assert plain == data
    assert not cancel.is_set()


def test_input_failure_surfaces_at_the_end_of_the_ciphertext(ring):
    # GIVEN a source (the tar/zstd stream) that fails after 3 MiB: gpg sees a clean EOF on its stdin
    error = SourceError("pg_dump exited with 1", stage="pg_dump")

    def chunks():
        for index in range(3):
            yield random.Random(index).randbytes(MIB)
        raise error

    stream = GpgStream(gpg_for(ring), reader_from_iter(chunks()), threading.Event(), mode="encrypt",
                       recipients=[ring.fingerprints["backup"]])
    ciphertext = reader_from_queue(stream.output, on_eof=stream.check)
    # WHEN the consumer (the uploader) reads the ciphertext to its end
    # THEN the end is not clean: the producer's original error comes out of read()
    with pytest.raises(SourceError) as info:
        while ciphertext.read(256 * 1024):
            pass
    assert info.value is error


def test_cancel_stops_a_stream_nobody_reads(ring):
    # GIVEN an encryption whose output queue fills up because the consumer went away
    cancel = threading.Event()
    data = random.Random(7).randbytes(20 * MIB)
    stream = GpgStream(gpg_for(ring), io.BytesIO(data), cancel, mode="encrypt",
                       recipients=[ring.fingerprints["backup"]])
    assert stream.output.get()  # it is producing
    # WHEN the pipeline is cancelled
    cancel.set()
    stream.join(20)
    # THEN the gpg thread ends instead of blocking on the full queue
    assert not stream._thread.is_alive()


def test_empty_input_round_trips(ring):
    gpg = gpg_for(ring)
    ciphertext = encrypt(gpg, b"", [ring.fingerprints["backup"]])
    assert ciphertext
    plain, stream = decrypt(gpg, ciphertext)
    stream.check()
    assert plain == b""


def test_encrypting_to_a_missing_recipient_fails(ring, public_ring):
    with pytest.raises(CryptoError, match="encryption failed"):
        encrypt(gpg_for(public_ring), b"data", [ring.fingerprints["stranger"]])


def test_decrypting_without_the_secret_key_is_a_key_problem(ring, public_ring):
    # GIVEN a ciphertext for the backup key, and a keyring with only its public half
    ciphertext = encrypt(gpg_for(ring), b"secret dump" * 1000, [ring.fingerprints["backup"]])
    # WHEN decryption is attempted
    plain, stream = decrypt(gpg_for(public_ring), ciphertext)
    # THEN nothing comes out, the verdict is a crypto error, and it is a key problem (not damage)
    assert plain == b""
    verdict = stream.verdict()
    assert isinstance(verdict, CryptoError)
    assert stream.key_problem is True


def test_tampered_ciphertext_is_a_crypto_error_but_no_key_problem(ring):
    gpg = gpg_for(ring)
    ciphertext = bytearray(encrypt(gpg, random.Random(1).randbytes(100_000), [ring.fingerprints["backup"]]))
    ciphertext[len(ciphertext) // 2] ^= 0x01
    _, stream = decrypt(gpg, bytes(ciphertext))
    assert isinstance(stream.verdict(), CryptoError)
    assert stream.key_problem is False


# -- passphrase-protected keys ---------------------------------------------------------------------
def test_passphrase_file_unlocks_a_protected_key(locked_ring, tmp_path):
    fpr = locked_ring.fingerprints["locked"]
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    gpg = gpg_for(locked_ring, passphrase_file=str(secret))
    ciphertext = encrypt(gpg, b"locked payload", [fpr])
    plain, stream = decrypt(gpg, ciphertext)
    stream.check()
    assert plain == b"locked payload"


def test_passphrase_command_unlocks_a_protected_key(locked_ring, tmp_path):
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    gpg = gpg_for(locked_ring, passphrase_command=("cat", str(secret)))
    plain, stream = decrypt(gpg, encrypt(gpg, b"via command", [locked_ring.fingerprints["locked"]]))
    stream.check()
    assert plain == b"via command"


def test_signing_with_a_protected_key_uses_the_passphrase(locked_ring, tmp_path):
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    fpr = locked_ring.fingerprints["locked"]
    gpg = gpg_for(locked_ring, passphrase_file=str(secret))
    assert gpg.verify_detached(MANIFEST, gpg.sign_detached(MANIFEST, fpr), [fpr], "manifest.json") == fpr


def test_wrong_passphrase_fails_decryption(locked_ring, tmp_path):
    secret = tmp_path / "passphrase"
    secret.write_text("wrong horse\n")
    gpg = gpg_for(locked_ring, passphrase_file=str(secret))
    plain, stream = decrypt(gpg, encrypt(gpg, b"locked payload", [locked_ring.fingerprints["locked"]]))
    assert plain == b""
    assert isinstance(stream.verdict(), CryptoError)


def test_wrong_passphrase_is_a_key_problem(locked_ring, tmp_path):
    secret = tmp_path / "passphrase"
    secret.write_text("wrong horse\n")
    gpg = gpg_for(locked_ring, passphrase_file=str(secret))
    _, stream = decrypt(gpg, encrypt(gpg, b"locked payload", [locked_ring.fingerprints["locked"]]))
    assert isinstance(stream.verdict(), CryptoError)
    assert stream.key_problem is True


def test_unreadable_passphrase_file_is_a_crypto_error(locked_ring, tmp_path):
    gpg = gpg_for(locked_ring, passphrase_file=str(tmp_path / "missing"))
    with pytest.raises(CryptoError, match="passphrase_file"):
        gpg.passphrase()


def test_key_expires_at_reads_the_expiry_of_keys_and_subkeys(ring, tmp_path):
    import datetime as dt

    gpg = gpg_for(ring)
    expires = gpg.key_expires_at(ring.fingerprints["signer"])  # the harness's keys expire after one year
    assert expires is not None and abs((expires - dt.datetime.now(dt.UTC)).total_seconds() - 365 * 86400) < 2 * 86400
    out = ring.gpg("--with-colons", "--list-keys", ring.fingerprints["backup"]).stdout.decode()
    subkey = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")][1]
    assert gpg.key_expires_at(subkey) is not None
    with pytest.raises(CryptoError, match="not in the keyring"):
        gpg.key_expires_at("0123456789ABCDEF0123456789ABCDEF01234567")


def test_a_key_without_expiry_expires_never():
    keys = make_keyring(())
    try:
        keys.gpg("--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key",
                 "forever <forever@afbackup.invalid>", "ed25519", "sign", "never")
        out = keys.gpg("--with-colons", "--list-keys", "forever@afbackup.invalid").stdout.decode()
        fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        assert gpg_for(keys).key_expires_at(fpr) is None
    finally:
        keys.cleanup()
