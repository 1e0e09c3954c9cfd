"""Adapter references: `name`, `name@N` (an immutable version), `name:alias`.

`name` alone means `name:latest`. Names and aliases are lower-case, start
with a letter or digit and hold only `a-z 0-9 . _ -`, at most 63 characters:
safe as a path segment, an S3 key part and a Prometheus label value. The
name `ft` is reserved: a model starting with `ft:` is a fine-tuned model id
of the fine-tuning API (loraplex/jobs/names.py), so it never reads as
`name:alias`.
"""

import re
from dataclasses import dataclass

from loraplex.adapters.errors import InvalidReference

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# ASCII digits only: str.isdigit() also accepts '²' or '٣', which int() refuses or misreads.
VERSION_PATTERN = re.compile(r"[0-9]+")
LATEST = "latest"


def is_alias_map(value: object) -> bool:
    """Whether `value` is what an aliases.json holds: an object of alias → version."""
    return isinstance(value, dict) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value.values()
    )


RESERVED = "ft"  # `ft:...` is a fine-tuned model id (loraplex/jobs/names.py), never name:alias


def check_name(name: str, what: str = "adapter name") -> str:
    if not name:
        raise InvalidReference(f"{what} is empty")
    if name == RESERVED and what == "adapter name":
        raise InvalidReference(
            f"adapter name '{RESERVED}' is reserved: a model starting with 'ft:' is a "
            "fine-tuned model id"
        )
    if NAME_PATTERN.fullmatch(name) and ".." not in name:
        return name
    if name != name.lower():
        reason = "it has upper-case letters"
    elif "/" in name or "\\" in name:
        reason = "it has a slash"
    elif ".." in name:
        reason = "it has '..'"
    elif any(c.isspace() for c in name):
        reason = "it has white space"
    elif len(name) > 63:
        reason = f"it is {len(name)} characters long (at most 63)"
    elif not name[0].isalnum():
        reason = "it must start with a letter or digit"
    else:
        reason = "it may hold only a-z, 0-9, '.', '_' and '-'"
    raise InvalidReference(f"invalid {what} '{name}': {reason}")


@dataclass(frozen=True)
class AdapterRef:
    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> "AdapterRef":
        if not isinstance(text, str):
            raise InvalidReference(f"invalid adapter reference {text!r}")
        if "@" in text:
            name, _, version = text.partition("@")
            if not VERSION_PATTERN.fullmatch(version) or int(version) < 1:
                raise InvalidReference(
                    f"invalid adapter reference '{text}': the version after '@' must be a "
                    "positive number, as in name@3"
                )
            return cls(check_name(name), version=int(version))
        if ":" in text:
            name, _, alias = text.partition(":")
            return cls(check_name(name), alias=check_name(alias, "alias"))
        return cls(check_name(text))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}:{self.alias}"
        return self.name
