"""Settings from the environment, optionally from a TOML config file.

Names are the environment variables operators already know from Zadarma's docs. The secret is a
``SecretStr`` so it never shows in ``repr``, logs or tracebacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PRODUCTION_API_URL = "https://api.zadarma.com"
SANDBOX_API_URL = "https://api-sandbox.zadarma.com"
DEFAULT_CONFIG_PATHS = (Path("dialer.toml"), Path.home() / ".config" / "dialer" / "config.toml")


class ConfigError(Exception):
    """A setting is missing or wrong; the message says which and how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    zadarma_key: str = Field(default="", validation_alias="ZADARMA_KEY")
    zadarma_secret: SecretStr = Field(default=SecretStr(""), validation_alias="ZADARMA_SECRET")
    zadarma_api_url: str = Field(default=PRODUCTION_API_URL, validation_alias="ZADARMA_API_URL")
    database_url: str = Field(default="sqlite:///dialer.db", validation_alias="DIALER_DATABASE_URL")
    timezone: str = Field(default="", validation_alias="DIALER_TIMEZONE")
    webhook_host: str = Field(default="127.0.0.1", validation_alias="DIALER_WEBHOOK_HOST")
    webhook_port: int = Field(default=0, ge=0, le=65535, validation_alias="DIALER_WEBHOOK_PORT")
    webhook_path: str = Field(default="/zadarma", validation_alias="DIALER_WEBHOOK_PATH")
    webhook_verify: bool = Field(default=True, validation_alias="DIALER_WEBHOOK_VERIFY")
    # The web console (dialer.web): its own port, off by default, so the webhook port can face the internet alone.
    web_port: int = Field(default=0, ge=0, le=65535, validation_alias="DIALER_WEB_PORT")
    web_host: str = Field(default="127.0.0.1", validation_alias="DIALER_WEB_HOST")
    http_timeout_s: float = Field(default=10.0, gt=0, validation_alias="DIALER_HTTP_TIMEOUT")
    # How long an agent's API session (dialer.agents.tokens) lasts: one shift by default.
    api_token_ttl_s: float = Field(default=12 * 3600.0, gt=0, validation_alias="DIALER_API_TOKEN_TTL")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the config file, so a one-off override never needs the file edited.
        return (init_settings, env_settings, _TomlSource(settings_cls))

    def require_credentials(self) -> None:
        if not self.zadarma_key or not self.zadarma_secret.get_secret_value():
            raise ConfigError(
                "ZADARMA_KEY and ZADARMA_SECRET are not set. Export them (from my.zadarma.com > Settings > API) "
                "or put zadarma_key/zadarma_secret in dialer.toml. To try without an account run `dialer sim serve`."
            )


class _TomlSource(PydanticBaseSettingsSource):
    """Reads ``$DIALER_CONFIG`` or the first of ``./dialer.toml``, ``~/.config/dialer/config.toml``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_path()
        if path is None:
            return {}
        import tomllib

        named = "DIALER_CONFIG=" if os.environ.get("DIALER_CONFIG") else "config file "
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{named}{path}: no such file") from None
        except IsADirectoryError:
            raise ConfigError(f"{named}{path}: is a folder, not a TOML file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{named}{path}: not a text file (TOML is UTF-8)") from None
        except OSError as exc:
            raise ConfigError(f"{named}{path}: cannot be read: {exc.strerror}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{named}{path}: not valid TOML: {exc}") from None
        fields = self.settings_cls.model_fields
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = key.lower()
            if name in fields:
                out[name] = value
            else:
                for fname, finfo in fields.items():
                    if str(finfo.validation_alias).lower() == name:
                        out[fname] = value
        return out


def config_path() -> Path | None:
    explicit = os.environ.get("DIALER_CONFIG")
    if explicit:
        return Path(explicit)
    return next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)


def load_settings(**overrides: Any) -> Settings:
    """The settings, or a ``ConfigError`` naming each wrong setting (its environment variable) and what is wrong."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe_invalid(exc)) from None


def _describe_invalid(exc: Any) -> str:
    aliases = {name: str(f.validation_alias or name).upper() for name, f in Settings.model_fields.items()}
    parts = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err.get("loc") else "?"
        value = err.get("input")
        shown = "" if isinstance(value, dict) or name == "zadarma_secret" else f"={str(value)[:60]!r}"
        parts.append(f"{aliases.get(name, name.upper())}{shown}: {err['msg'].lower()}")
    return "; ".join(parts)
