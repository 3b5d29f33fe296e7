"""afbackup: streaming, encrypted, verifiable backups of an Apache Airflow deployment."""

__version__ = "0.1.0"
