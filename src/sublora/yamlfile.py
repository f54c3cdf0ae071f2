"""Profile files read strictly: UTF-8 yaml holding one mapping, at most MAX_BYTES, no key given twice (yaml would
keep the last silently), and no anchor or alias (a few hundred bytes of aliases can expand to gigabytes)."""
from __future__ import annotations

from pathlib import Path

import yaml

MAX_BYTES = 256 * 1024  # the package's largest profile is under 4 kB


class ProfileFileError(ValueError):
    """A profile file that cannot be read as one plain mapping; the message names the file and the fix."""


class _Strict(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            mark = self.peek_event().start_mark
            raise ProfileFileError(f"uses a yaml anchor or alias (line {mark.line + 1}): write each value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ProfileFileError(f"gives {key!r} twice (line {key_node.start_mark.line + 1}): keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_mapping(path: Path) -> dict:
    """The mapping in the yaml file at path ({} for an empty file), or a ProfileFileError naming the fix."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ProfileFileError(f"profile file {path} is {path.stat().st_size:,} bytes, more than a profile's "
                                   f"{MAX_BYTES:,}: it holds only the settings that differ from the defaults")
        text = path.read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=_Strict) or {}
    except ProfileFileError as e:
        raise ProfileFileError(str(e) if str(e).startswith("profile file") else f"profile file {path} {e}") from None
    except UnicodeDecodeError as e:
        raise ProfileFileError(f"profile file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                               f"{e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ProfileFileError(f"cannot read profile file {path} ({e.__class__.__name__}: {e.strerror or e}); "
                               f"give the path of a yaml file you can read") from None
    except yaml.YAMLError as e:
        raise ProfileFileError(f"profile file {path} is not valid yaml: {str(e).splitlines()[0]}; "
                               f"fix the file (it holds settings such as `seeds: 3`)") from None
    if not isinstance(raw, dict):
        raise ProfileFileError(f"profile file {path} must hold a mapping of settings, got {type(raw).__name__}")
    return raw
