"""Configuration: the schema (``model``), units, and resolution into ``Settings`` (``load``)."""

from afbackup.config.load import Settings, dsn_flag, env_name, iter_keys, load_fleet, load_settings
from afbackup.config.model import Config

__all__ = ["Config", "Settings", "dsn_flag", "env_name", "iter_keys", "load_fleet", "load_settings"]
