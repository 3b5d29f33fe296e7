"""OpenPGP through python-gnupg: key preflight, streaming encrypt/decrypt, manifest signatures.

Rules from FIELD_NOTES/RELIABILITY section F, all enforced here:
- recipients and signers are full 40-hex fingerprints, trusted explicitly
  (``--trust-model always`` for pinned recipients; signers checked against
  ``trusted_signers``), never by keyring trust;
- a gpg call succeeds only if ``result.ok`` and ``returncode == 0`` (and, for
  decryption, the status is "decryption ok"); ``on_data_failure`` is checked;
- payloads are never buffered: ``on_data`` returns False and hands chunks to
  a bounded queue;
- gpg does not compress again (``--compress-algo none``): zstd already did.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gnupg

from afbackup.config.model import EncryptionConfig
from afbackup.errors import ConfigError, CryptoError
from afbackup.procs import run_checked
from afbackup.streams import Cancelled, ChunkQueue, Readable

logger = logging.getLogger(__name__)

GPG_BUFFER = 1 << 20
QUEUE_CHUNKS = 8
COMMON_OPTIONS = ["--no-auto-key-retrieve", "--no-emit-version"]
UNUSABLE_VALIDITY = {"r": "revoked", "e": "expired", "i": "invalid", "d": "disabled"}


def _check_library() -> None:
    """The PyPI package ``gnupg`` installs the same import name; only python-gnupg works here."""
    if not hasattr(gnupg, "__version__") or not hasattr(gnupg.GPG, "encrypt_file"):
        raise ConfigError("the installed `gnupg` module is not python-gnupg", hint="pip install python-gnupg")


def _stderr_tail(result: object) -> str:
    """gpg's own complaint, without status lines and key-description chatter."""
    lines = [line for line in (getattr(result, "stderr", "") or "").splitlines()
             if not line.startswith("[GNUPG:]") and "encrypted with" not in line and not line.strip().startswith('"')]
    return " | ".join(lines[-2:])[-300:]


class Gpg:
    """One keyring (GNUPGHOME) and the passphrase source of its secret keys."""

    def __init__(self, cfg: EncryptionConfig) -> None:
        _check_library()
        self.cfg = cfg
        self.home = cfg.gnupghome or None
        if self.home and not Path(self.home).is_dir():
            raise CryptoError(f"encryption.gnupghome {self.home} is not a directory",
                              hint="create it (mode 0700) and import the keys")
        self._passphrase: str | None = None
        self._passphrase_loaded = False

    def new_context(self) -> gnupg.GPG:
        """A fresh python-gnupg instance: one per operation, so per-call hooks never cross."""
        try:
            ctx = gnupg.GPG(gnupghome=self.home, options=list(COMMON_OPTIONS))
        except (OSError, ValueError) as exc:
            raise CryptoError(f"cannot run gpg: {exc}", hint="install GnuPG >= 2.1") from None
        ctx.buffer_size = GPG_BUFFER
        ctx.encoding = "utf-8"
        return ctx

    def passphrase(self) -> str | None:
        """The passphrase of the signing/decryption key, read once from a file or command."""
        if not self._passphrase_loaded:
            self._passphrase_loaded = True
            if self.cfg.passphrase_file:
                try:
                    self._passphrase = Path(self.cfg.passphrase_file).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    raise CryptoError(f"cannot read encryption.passphrase_file: {exc.strerror}") from None
            elif self.cfg.passphrase_command:
                out = run_checked(self.cfg.passphrase_command, stage="passphrase", error=CryptoError, timeout=60)
                self._passphrase = out.rstrip("\r\n")
        return self._passphrase

    def check_recipients(self, fingerprints: Sequence[str]) -> None:
        """Every recipient key is present, valid and can encrypt (exit 7 otherwise)."""
        if not fingerprints:
            raise ConfigError("encryption.recipients is empty", hint="list the full fingerprints of the backup keys")
        keys = {key["fingerprint"]: key for key in self.new_context().list_keys()}
        for fpr in fingerprints:
            key = keys.get(fpr)
            if key is None:
                raise CryptoError(f"recipient key {fpr} is not in the keyring {self.home or '(default)'}",
                                  hint="import its public key (gpg --import) or fix encryption.recipients")
            _check_usable(key, fpr, capability="E", purpose="encryption")

    def check_signer(self, fingerprint: str) -> None:
        keys = {key["fingerprint"]: key for key in self.new_context().list_keys(secret=True)}
        if fingerprint not in keys:
            raise CryptoError(f"signing key {fingerprint} has no secret key in the keyring",
                              hint="import the signing key or fix encryption.sign_with")
        public = {key["fingerprint"]: key for key in self.new_context().list_keys()}
        _check_usable(public.get(fingerprint, keys[fingerprint]), fingerprint, capability="S", purpose="signing")

    def sign_detached(self, data: bytes, fingerprint: str) -> bytes:
        result = self.new_context().sign(
            data, keyid=fingerprint, detach=True, binary=True, passphrase=self.passphrase(),
        )
        if not result or result.returncode != 0 or not result.data:
            raise CryptoError(f"signing the manifest with {fingerprint} failed: {_stderr_tail(result)}",
                              hint="check the key and encryption.passphrase_file")
        return result.data

    def encrypt_bytes(self, data: bytes, recipients: Sequence[str]) -> bytes:
        """A small payload (a key), encrypted in memory to ``recipients`` (binary OpenPGP)."""
        result = self.new_context().encrypt(data, list(recipients), armor=False, always_trust=True,
                                            extra_args=["--compress-algo", "none"])
        if not result.ok or result.returncode != 0 or not result.data:
            raise CryptoError(f"gpg encryption failed ({result.status}): {_stderr_tail(result)}",
                              hint="check the recipient keys", stage="gpg")
        return result.data

    def decrypt_bytes(self, data: bytes, what: str) -> bytes:
        """Decrypt a small payload in memory."""
        result = self.new_context().decrypt(data, passphrase=self.passphrase(), always_trust=True)
        if not result.ok or result.returncode != 0 or result.status != "decryption ok":
            raise CryptoError(f"cannot decrypt {what} ({result.status or 'no status'})",
                              hint="the private key of a recipient must be in encryption.gnupghome", stage="gpg")
        return result.data

    def verify_detached(self, data: bytes, signature: bytes, trusted: Sequence[str], what: str) -> str:
        """Check a detached signature; return the signer's (primary key) fingerprint if it is trusted.

        A signature made while its key was valid stays valid after the key expired
        (gpg: EXPKEYSIG + VALIDSIG, the signature time before the key's expiry); a
        revoked key is untrusted from its revocation on (REVKEYSIG: the signature
        must predate the revocation).
        """
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="afbackup-sig-") as sig_file:
            sig_file.write(signature)
            sig_file.flush()
            result = self.new_context().verify_data(sig_file.name, data)
        status = _status_lines(result)
        valid = status.get("VALIDSIG", "").split()
        verdicts = [code for code in ("GOODSIG", "EXPKEYSIG", "REVKEYSIG") if code in status]
        if len(valid) < 3 or len(verdicts) != 1 or {"BADSIG", "ERRSIG", "EXPSIG"} & set(status):
            raise CryptoError(f"the signature of {what} is not valid ({result.status or 'no valid signature'})",
                              hint="the manifest was altered or signed by an unknown key")
        signing_key = valid[0].upper()
        signer = (valid[9] if len(valid) >= 10 else valid[0]).upper()
        if signer not in trusted:
            raise CryptoError(f"{what} is signed by {signer}, which is not in encryption.trusted_signers",
                              hint="add the fingerprint only if you trust that key")
        signed_at = dt.datetime.fromtimestamp(int(valid[2]), dt.UTC)
        if verdicts[0] == "GOODSIG" and result.returncode != 0:
            raise CryptoError(f"gpg did not accept the signature of {what}: {_stderr_tail(result)}")
        if verdicts[0] == "EXPKEYSIG":
            expiry = self.key_expires_at(signing_key)
            if expiry is None or signed_at >= expiry:
                raise CryptoError(f"{what} was signed at {signed_at:%Y-%m-%d %H:%M} UTC, after its key {signer} "
                                  "expired", hint="a signature counts only if it was made while the key was valid")
        if verdicts[0] == "REVKEYSIG":
            revoked = self.key_revoked_at(signer)
            if revoked is None or signed_at >= revoked:
                raise CryptoError(f"{what} is signed by {signer}, which was revoked"
                                  + (f" at {revoked:%Y-%m-%d %H:%M} UTC" if revoked else ""),
                                  hint="signatures of a revoked key are untrusted from its revocation on")
            logger.warning("%s is signed by %s, revoked at %s: the signature predates the revocation and is "
                           "accepted", what, signer, revoked.isoformat())
        return signer

    def key_expires_at(self, fingerprint: str) -> dt.datetime | None:
        """When the key (primary or subkey fingerprint) stops being usable; None if it never expires.

        For a subkey, the earlier of its own expiry and its primary key's. A key
        that is not in the keyring is a ``CryptoError``.
        """
        fpr = fingerprint.upper()
        for key in self.new_context().list_keys():
            if key["fingerprint"] == fpr:
                return _epoch(key.get("expires"))
            for sub in key.get("subkeys", []):
                if len(sub) > 2 and str(sub[2]).upper() == fpr:
                    info = (key.get("subkey_info") or {}).get(sub[0], {})
                    moments = [m for m in (_epoch(key.get("expires")), _epoch(info.get("expires"))) if m]
                    return min(moments) if moments else None
        raise CryptoError(f"key {fpr} is not in the keyring {self.home or '(default)'}",
                          hint="import its public key or fix the fingerprint")

    def key_revoked_at(self, fingerprint: str) -> dt.datetime | None:
        """When the primary key was revoked (its key revocation signature), None if it is not."""
        ctx = self.new_context()
        argv = [ctx.gpgbinary, "--batch", "--with-colons", "--list-sigs", fingerprint]
        if self.home:
            argv[1:1] = ["--homedir", self.home]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CryptoError(f"cannot list the signatures of key {fingerprint}: {exc}") from None
        moments = [_epoch(f[5]) for f in (line.split(":") for line in out.splitlines())
                   if f[0] == "rev" and len(f) > 10 and f[10].startswith("20")]
        found = [m for m in moments if m]
        return min(found) if found else None


def _epoch(value: object) -> dt.datetime | None:
    try:
        seconds = int(str(value or "").strip() or 0)
    except ValueError:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds else None


def _status_lines(result: object) -> dict[str, str]:
    """gpg's status lines of one verification: code -> arguments."""
    lines: dict[str, str] = {}
    for line in (getattr(result, "stderr", "") or "").splitlines():
        if line.startswith("[GNUPG:] "):
            code, _, args = line[len("[GNUPG:] "):].partition(" ")
            lines.setdefault(code, args)
    return lines


def _check_usable(key: dict, fpr: str, *, capability: str, purpose: str) -> None:
    validity = key.get("trust", "")
    if validity in UNUSABLE_VALIDITY:
        raise CryptoError(f"key {fpr} is {UNUSABLE_VALIDITY[validity]}", hint="use a valid key")
    if capability not in key.get("cap", ""):
        raise CryptoError(f"key {fpr} has no usable {purpose} (sub)key (expired or missing)",
                          hint=f"renew or add a {purpose} subkey")


class GpgStream:
    """gpg in a thread: input pulled from a reader, output chunks on a bounded queue.

    The consumer reads ``self.output`` until None, then calls ``check()``, which
    raises if gpg, the input reader or the output hand-off failed.
    """

    def __init__(self, gpg: Gpg, source: Readable, cancel: threading.Event, *, mode: str,
                 recipients: Sequence[str] = ()) -> None:
        self.output = ChunkQueue(QUEUE_CHUNKS, cancel)
        self._ctx = gpg.new_context()
        self._ctx.on_data = self._on_data
        self._results: list[Any] = []
        make_result = self._ctx.result_map["crypt"]

        def capture(ctx: Any) -> Any:  # keep the result object: python-gnupg drops it when the input fails
            result = make_result(ctx)
            self._results.append(result)
            return result

        self._ctx.result_map = {**self._ctx.result_map, "crypt": capture}
        self._gpg, self._source, self._mode, self._recipients = gpg, source, mode, list(recipients)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"gpg-{mode}", daemon=True)
        self._thread.start()

    def _on_data(self, chunk: bytes) -> bool:
        if chunk:
            self.output.put(chunk)  # raises Cancelled when the pipeline stops: recorded by python-gnupg
        return False

    def _run(self) -> None:
        extra = ["--compress-algo", "none"]
        try:
            if self._mode == "encrypt":
                self._ctx.encrypt_file(self._source, self._recipients, armor=False, always_trust=True,
                                       extra_args=extra)
            else:
                self._ctx.decrypt_file(self._source, passphrase=self._gpg.passphrase(), always_trust=True,
                                       extra_args=extra)
        except BaseException as exc:  # handed to the consumer through check()
            self.error = exc
        finally:
            self.output.close()

    def check(self) -> None:
        """Raise the first failure: the input's own error, else gpg's, else the hand-off's."""
        failure = self.verdict()
        if failure is not None:
            raise failure

    def verdict(self) -> BaseException | None:
        """Join the gpg thread and say what failed, if anything."""
        self._thread.join()
        if self.error is not None and not isinstance(self.error, (BrokenPipeError, Cancelled)):
            return self.error
        result = self.result
        if result is None or not result.ok or result.returncode != 0:
            return self._gpg_error(result)
        if self._mode == "decrypt" and result.status != "decryption ok":
            return self._gpg_error(result)
        failure = getattr(result, "on_data_failure", None)
        if failure is not None and not isinstance(failure, Cancelled):
            return failure
        return None

    @property
    def result(self) -> Any:
        return self._results[-1] if self._results else None

    @property
    def key_problem(self) -> bool:
        """gpg could not use a key at all (missing secret key, bad passphrase): not a damaged object.

        python-gnupg's final ``status`` may already say "decryption failed", so gpg's own
        status lines are read too.
        """
        status = (getattr(self.result, "status", "") or "").lower()
        stderr = getattr(self.result, "stderr", "") or ""
        return any(word in status for word in ("secret key", "passphrase")) or any(
            f"[GNUPG:] {code}" in stderr
            for code in ("BAD_PASSPHRASE", "MISSING_PASSPHRASE", "NO_SECKEY", "ERROR pkdecrypt_failed"))

    def _gpg_error(self, result: object) -> CryptoError:
        status = getattr(result, "status", None) or "no status"
        what = "encryption" if self._mode == "encrypt" else "decryption"
        hint = "check the recipient keys" if self._mode == "encrypt" else \
            "the private key of a recipient must be in encryption.gnupghome (with its passphrase)"
        return CryptoError(f"gpg {what} failed ({status}): {_stderr_tail(result)}", hint=hint, stage="gpg")

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
