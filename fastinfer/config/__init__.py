"""Configuration: the contract's TOML (or YAML) turned into frozen dataclasses.

Owns: the schema, its validation (every error names its key path), defaults,
secret references and their masking.

Must not touch: sockets, processes, HTTP. Loading a config has no side effects
beyond reading the file (secrets are resolved later, by the session package).
"""
from .schema import (
    BudgetConfig,
    CircuitBreakerConfig,
    ClusterConfig,
    Config,
    ConfigError,
    DeploymentConfig,
    GatewayKeyConfig,
    MockConfig,
    PriceConfig,
    RateLimitConfig,
    ReplicaConfig,
    RetryConfig,
    ServerConfig,
    SessionConfig,
    TimeoutsConfig,
    default_config,
    load_config,
    missing_credentials,
    parse_config,
)
from .secrets import Secret

__all__ = [
    "BudgetConfig", "CircuitBreakerConfig", "ClusterConfig", "Config", "ConfigError", "DeploymentConfig",
    "GatewayKeyConfig", "MockConfig", "PriceConfig", "RateLimitConfig", "ReplicaConfig",
    "RetryConfig", "Secret", "ServerConfig", "SessionConfig", "TimeoutsConfig",
    "default_config", "load_config", "missing_credentials", "parse_config",
]
