"""Reading template sources from template directories.

A template is a directory named after it holding one file per channel part::

    winter-double-points/
        sms.text.j2
        email.subject.j2  email.html.j2  email.text.j2
        push.title.j2     push.body.j2

Each file is looked up on its own: first in every directory of the search
path, in order, then among the built-ins shipped in ``templates/builtin/``. So
a directory on the search path may override just one part of a built-in
template (the SMS, say) and inherit the others, the way Jinja's
``ChoiceLoader`` works.

Only sources (strings) come out of here. A campaign version stores them in the
database when it is created, and workers render from those, never from files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from templates._errors import TemplateError
from templates._parts import part_filename, parts_of

#: Where the built-in templates live (shipped as package data).
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

#: A template name: letters, digits, ``-`` and ``_``, starting with a letter or
#: digit. No dots or separators, so a name can never leave a template directory.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def check_name(name: str) -> None:
    """Refuse a template name that is not a safe slug.

    Args:
        name: The template name, as written in a campaign file.

    Raises:
        TemplateError: The name could reach outside a template directory or is
            otherwise not a plain slug.
    """
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise TemplateError(
            repr(name),
            None,
            "not a valid template name (use 1-100 letters, digits, '-' or '_', "
            "starting with a letter or digit)",
        )


def load_templates(
    name: str, channels: Iterable[str], search_path: Sequence[Path] = ()
) -> dict[str, dict[str, str]]:
    """Read the sources of every part of each channel of a template.

    Args:
        name: The template name, a slug such as ``"winter-double-points"``.
        channels: The channels to load (``"sms"``, ``"email"``, ``"push"``);
            duplicates are read once.
        search_path: Directories searched, in order, before the built-ins.

    Returns:
        ``{channel: {part: source}}`` for every requested channel.

    Raises:
        TemplateError: The name is not a safe slug, a channel is unknown, a
            file is not UTF-8, or parts are missing; the message then names
            every missing file and every directory searched.
    """
    check_name(name)
    directories = [Path(directory) for directory in search_path] + [BUILTIN_DIR]
    sources: dict[str, dict[str, str]] = {}
    missing: list[str] = []
    for channel in channels:
        if channel in sources:
            continue
        sources[channel] = {}
        for part in parts_of(name, channel):
            filename = part_filename(name, channel, part)
            path = _find(filename, directories)
            if path is None:
                missing.append(filename)
                continue
            sources[channel][part] = _read(path, filename)
    if missing:
        looked_in = ", ".join(str(directory) for directory in directories)
        raise TemplateError(
            name, None, f"missing template files {', '.join(missing)} (looked in {looked_in})"
        )
    return sources


def _find(filename: str, directories: Sequence[Path]) -> Path | None:
    for directory in directories:
        path = directory / filename
        if path.is_file():
            return path
    return None


def _read(path: Path, filename: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(filename, None, f"{path} is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise TemplateError(filename, None, f"cannot read {path}: {exc.strerror}") from exc
