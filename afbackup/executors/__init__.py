"""Executors: where Airflow commands run (``local`` process or ``kubernetes`` exec)."""

from __future__ import annotations

from afbackup.config.model import AirflowConfig
from afbackup.executors.base import Executor


def open_executor(cfg: AirflowConfig) -> Executor | None:
    """The configured executor, or None for ``executor = "none"``."""
    if cfg.executor == "none":
        return None
    if cfg.executor == "local":
        from afbackup.executors.local import LocalExecutor

        return LocalExecutor()
    from afbackup.executors.kubernetes import KubernetesExecutor

    k8s = cfg.kubernetes
    return KubernetesExecutor(
        namespace=k8s.namespace, target=k8s.target, container=k8s.container,
        context=k8s.context, kubeconfig=k8s.kubeconfig, service_account_dir=k8s.service_account_dir,
    )
