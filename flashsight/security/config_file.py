"""The TOML configuration file: flat `name = value` lines, one per server setting.

Precedence is the settings object's: command-line flags, then `FLASHSIGHT_*` variables, then this
file, then the defaults. A name the server does not know is refused rather than silently ignored,
so a typo in a security setting cannot leave it at its default unnoticed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class ConfigFileError(ValueError):
    """The file is missing, unreadable or not valid TOML; the message is one sentence."""


def read_config_file(path: Path, known_names: Iterable[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigFileError(f"the configuration file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigFileError(f"the configuration file {str(path)!r} cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"the configuration file {str(path)!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(values) - set(known_names) - {"config"})
    if unknown:
        raise ConfigFileError(f"the configuration file {str(path)!r} sets unknown settings: {', '.join(unknown)}")
    return values


class ConfigFileSource(PydanticBaseSettingsSource):
    """A settings source holding the file's values (none when no file is named)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.values = read_config_file(path, settings_cls.model_fields) if path else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {name: value for name, value in self.values.items() if name != "config"}
