"""A small Kubernetes API server of our own, for exec-path tests.

Why not mock the kubernetes client: the bugs that matter (merged stdout and
stderr, UTF-8 decoding of binary frames, missing exit status, v4 stdin that
cannot be half-closed) live in the client's websocket code. Tests therefore
drive the REAL, unmodified client over a real TCP socket on 127.0.0.1 against
this fake, which speaks the same REST and channel protocols and runs the
"container's" command as a local subprocess.
"""

from tests.k8s_fake.exec_session import ExecRecord
from tests.k8s_fake.server import V4, V5, FakeCluster, FakePod, Faults

__all__ = ["V4", "V5", "ExecRecord", "FakeCluster", "FakePod", "Faults"]
