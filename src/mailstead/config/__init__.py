"""The configuration: one frozen typed model loaded from DATA/mailstead.toml (docs/config.md)."""

from mailstead.config.loader import load_config, parse_config
from mailstead.config.model import (
    CONFIG_FILE_NAME,
    AntivirusConfig,
    AuthChecksConfig,
    Config,
    DNSConfig,
    HostPort,
    ListenConfig,
    LogConfig,
    QueueConfig,
    SecurityConfig,
    SmarthostConfig,
    SMTPConfig,
    SpamConfig,
    TLSConfig,
)

__all__ = [
    "CONFIG_FILE_NAME",
    "AntivirusConfig",
    "AuthChecksConfig",
    "Config",
    "DNSConfig",
    "HostPort",
    "ListenConfig",
    "LogConfig",
    "QueueConfig",
    "SMTPConfig",
    "SecurityConfig",
    "SmarthostConfig",
    "SpamConfig",
    "TLSConfig",
    "load_config",
    "parse_config",
]
