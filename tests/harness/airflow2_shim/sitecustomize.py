"""Test-harness shim for Airflow 2.11.x under cryptography >= 45 (this machine's pip offers only 51.x).

Airflow 2's ``get_fernet()`` sets ``_fernet.is_encrypted = True`` on a ``MultiFernet``, which cryptography
now implements in Rust (no attribute may be added): every connection or variable write fails with
``AttributeError``. Airflow's own constraints pin an older cryptography; the harness cannot install one
offline, so Airflow 2 processes started by the tests get this wrapper (on ``PYTHONPATH``). Product code
never loads it.
"""

try:
    import cryptography.fernet as _fernet_module

    _RustMultiFernet = _fernet_module.MultiFernet
    try:
        _RustMultiFernet([_fernet_module.Fernet(_fernet_module.Fernet.generate_key())]).is_encrypted = True
    except AttributeError:

        class MultiFernet:
            """Delegates to cryptography's MultiFernet and accepts extra attributes."""

            def __init__(self, fernets):
                self._inner = _RustMultiFernet(fernets)

            def __getattr__(self, name):
                return getattr(self._inner, name)

        _fernet_module.MultiFernet = MultiFernet
except ImportError:
    pass
