"""Settings (env prefix ``RECSTACK_``, nested with ``__``, optional ``recstack.toml``) and the
base class of every component configuration.

A component is configured by a pydantic model that round-trips: ``Cfg(**cfg.dump_config()) == cfg``.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from recstack.errors import ConfigError

__all__ = ["ComponentConfig", "Settings", "get_settings", "load_toml"]


class ComponentConfig(BaseModel):
    """Base of every component configuration: frozen, no unknown keys, JSON/TOML round-trip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def dump_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_config(cls, data: dict[str, Any] | None) -> Self:
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error becomes a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc


class Settings(BaseSettings):
    """Process-wide settings. Every field can be set as ``RECSTACK_<NAME>`` (nested with ``__``)."""

    model_config = SettingsConfigDict(env_prefix="RECSTACK_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default=Path("."), description="root under which releases/ and data/ live")
    releases_dir: Path | None = None
    data_dir: Path | None = None
    quiet: bool = False
    seed: int = 42

    def releases_path(self) -> Path:
        return self.releases_dir or self.home / "releases"

    def data_path(self) -> Path:
        return self.data_dir or self.home / "data"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The cached settings; tests override them by clearing this cache or via dependency overrides."""
    return Settings()
