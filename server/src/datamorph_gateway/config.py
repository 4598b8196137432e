"""The gateway's settings: one typed object, built once at start-up, in sections.

``Settings`` holds one frozen section per concern (``config_sections``: server, tls,
auth, database, embedded, limits, logging, metrics, workflows, aws, sidecar); each module is
handed only the section(s) it uses. A field keeps its flat name in its section, and
that name in upper case is its key: ``settings.database.db_pool_max`` is ``DB_POOL_MAX``.

Sources, in rising precedence: the defaults in the sections, a JSON config file
(``CONFIG_FILE``), an AWS Secrets Manager secret (``CONFIG_SECRET_ID``) and
the environment. Every source uses the same upper-case keys (DataMorph's own,
e.g. ``RDS_ENDPOINT``, plus the gateway's, e.g. ``GRPC_PORT``). Nothing else in
the gateway reads ``os.environ``: the settings object is passed down. The one exception
is tracing: OpenTelemetry's SDK reads the standard OTEL_* variables itself
(``observability.tracing``, handed ``os.environ`` by ``__main__``), as every
OpenTelemetry SDK does, so they are not keys here.

A secret may also be in the format RDS writes for managed credentials
(``host``, ``port``, ``dbname``, ``username``, ``password``); those keys are
read as the matching ``RDS_*`` keys.

The settings are checked once, as they are built; ``config_checks`` holds the rules.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamorph_gateway.config_checks import (
    MIN_RUN_LEASE_S,
    ORIGIN,
    SSLMODES,
    is_loopback,
    validate,
)
from datamorph_gateway.config_sections import (
    AuthSettings,
    AwsSettings,
    DatabaseSettings,
    EmbeddedSettings,
    LimitsSettings,
    LoggingSettings,
    MetricsSettings,
    ServerSettings,
    SidecarSettings,
    TlsSettings,
    WorkflowSettings,
    usable_cpus,
)
from datamorph_gateway.errors import ConfigError

__all__ = [
    "MIN_RUN_LEASE_S",
    "ORIGIN",
    "SSLMODES",
    "AuthSettings",
    "AwsSettings",
    "DatabaseSettings",
    "EmbeddedSettings",
    "LimitsSettings",
    "LoggingSettings",
    "MetricsSettings",
    "SecretLoader",
    "ServerSettings",
    "Settings",
    "SidecarSettings",
    "TlsSettings",
    "WorkflowSettings",
    "is_loopback",
    "load_settings",
    "normalize_secret",
    "usable_cpus",
]

SecretLoader = Callable[[AwsSettings], Mapping[str, Any]]

# Keys of an RDS-managed secret and the DataMorph keys they stand for.
_RDS_SECRET_KEYS = {
    "host": "RDS_ENDPOINT",
    "port": "RDS_PORT",
    "dbname": "RDS_DBNAME",
    "username": "RDS_USERNAME",
    "password": "RDS_PASSWORD",
}


@dataclass(frozen=True)
class Settings:
    """Every knob of the gateway, in sections; field ``foo_bar`` of any section is key ``FOO_BAR``.

    Production code reads a section (``settings.database.db_pool_max``) and hands a module
    only the section(s) it uses. Tests and tools that think in keys build one with
    ``Settings.from_flat(db_pool_max=4)`` or change one with ``settings.with_flat(...)``.
    """

    server: ServerSettings = field(default_factory=ServerSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    embedded: EmbeddedSettings = field(default_factory=EmbeddedSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    workflows: WorkflowSettings = field(default_factory=WorkflowSettings)
    aws: AwsSettings = field(default_factory=AwsSettings)
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)

    @classmethod
    def from_flat(cls, **fields: Any) -> Settings:
        """The defaults with some fields set by their flat names: ``from_flat(db_pool_max=4)``.

        Each name goes to the section that holds it; a name no section has is a TypeError,
        as an unknown keyword is to a constructor. For tests and tools: the loader and the
        gateway use the sections.
        """
        return cls().with_flat(**fields)

    def with_flat(self, **fields: Any) -> Settings:
        """A copy with some fields changed by their flat names (``dataclasses.replace`` for
        the sections): ``settings.with_flat(db_pool_min=0, grpc_port=0)``."""
        changes: dict[str, dict[str, Any]] = {}
        for name, value in fields.items():
            where = _FIELDS.get(name)
            if where is None:
                raise TypeError(f"Settings has no field {name!r} in any section")
            changes.setdefault(where[0], {})[name] = value
        sections = {
            section: dataclasses.replace(getattr(self, section), **values)
            for section, values in changes.items()
        }
        return dataclasses.replace(self, **sections)

    def flat(self) -> dict[str, Any]:
        """Every field by its flat name (the key in lower case), sections in order."""
        return {name: getattr(getattr(self, where[0]), name) for name, where in _FIELDS.items()}

    def drain_period_s(self) -> float:
        """DRAIN_S, with -1 (the default) worked out from Envoy's health-check interval."""
        drain_s = self.server.drain_s
        return drain_s if drain_s >= 0 else 2 * self.sidecar.envoy_health_check_interval_s

    def redacted(self) -> dict[str, Any]:
        """The settings as a flat dict safe to log: secrets and DSNs masked."""
        out = self.flat()
        for key in (
            "rds_password",
            "database_url",
            "sidecar_secret",
            "db_readonly_password",
            "db_watchdog_password",
            "db_state_password",
        ):
            if out[key]:
                out[key] = "***"
        return out


# Each flat name: the section that holds it, and its field there (its type for _coerce).
_DEFAULTS = Settings()
_FIELDS: dict[str, tuple[str, dataclasses.Field[Any]]] = {
    spec.name: (section.name, spec)
    for section in dataclasses.fields(_DEFAULTS)
    for spec in dataclasses.fields(getattr(_DEFAULTS, section.name))
}


def _coerce(key: str, raw: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{key} must be a boolean (true/false)")
    if kind in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be a number")
        try:
            return kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number") from None
    if isinstance(raw, (dict, list)):
        raise ConfigError(f"{key} must be a string")
    return str(raw)


def _apply(values: dict[str, Any], source: Mapping[str, Any], *, strict: bool) -> None:
    """Fold one source's keys into values; unknown keys are errors only in files."""
    for key, raw in source.items():
        name = key.lower()
        where = _FIELDS.get(name)
        if where is None:
            if strict:
                raise ConfigError(f"unknown configuration key {key!r}")
            continue
        spec = where[1]
        if raw is None:
            continue
        if name == "auth_policy" and isinstance(raw, (dict, list)):
            raw = json.dumps(raw)  # the policy as an object in a JSON file or secret
        kind = {"int": int, "float": float, "bool": bool}.get(str(spec.type), str)
        values[name] = _coerce(key, raw, kind)


def _read_file(path: str) -> Mapping[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config file {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


def normalize_secret(data: Mapping[str, Any]) -> dict[str, Any]:
    """Read a secret in DataMorph's key format or RDS's managed-secret format."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        mapped = _RDS_SECRET_KEYS.get(key)
        if mapped is not None:
            out[mapped] = value
        elif key.lower() in _FIELDS:
            out[key.upper()] = value
    return out


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    secret_loader: SecretLoader | None = None,
) -> Settings:
    """Build the settings from defaults, file, secret and environment.

    ``secret_loader`` fetches the secret named by ``config_secret_id`` (the
    AWS adapter in production), given the AWS section as the file and the
    environment set it; it is only called when a secret is named.
    """
    env = dict(os.environ if environ is None else environ)
    known_env = {k: v for k, v in env.items() if k.lower() in _FIELDS}
    values: dict[str, Any] = {}

    config_file = env.get("CONFIG_FILE", "")
    if config_file:
        _apply(values, _read_file(config_file), strict=True)

    # The secret's name and AWS endpoints may come from the file or the env.
    _apply(values, known_env, strict=False)
    staged = Settings.from_flat(**values)
    if staged.aws.config_secret_id and secret_loader is not None:
        _apply(values, normalize_secret(secret_loader(staged.aws)), strict=False)
        _apply(values, known_env, strict=False)

    settings = Settings.from_flat(**values)
    validate(settings)
    return settings
