"""Everything a worker process needs, built once per process and lazily.

The engine is created on first use, after dramatiq has forked its worker
processes, so no connection crosses a fork. Campaign versions are immutable,
so their parsed spec and template sources are cached by id for the life of
the process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import dramatiq
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from channels import Channel, OutboxChannel
from loyalcast.settings import Settings
from store import Campaign, CampaignVersion, make_engine, make_sessionmaker
from templates import Renderer

from .campaigns import SENDABLE_CHANNELS, CampaignSpec

__all__ = ["LoadedVersion", "Runtime", "build_channels"]


def build_channels(settings: Settings) -> dict[str, Channel]:
    """One channel per name: live when its credentials are set, the file outbox otherwise."""
    outbox = settings.effective_outbox_dir
    return {name: OutboxChannel(name, outbox) for name in SENDABLE_CHANNELS}


@dataclass(frozen=True)
class LoadedVersion:
    """A campaign version as workers use it."""

    id: int
    campaign_id: int
    campaign_name: str
    version: int
    spec: CampaignSpec
    templates: dict[str, dict[str, str]]


class Runtime:
    """Per-process state shared by the actors: engine, channels, renderer, caches."""

    def __init__(
        self,
        settings: Settings,
        broker: dramatiq.Broker | None = None,
        channels: dict[str, Channel] | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.renderer = Renderer()
        self._channels = channels
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._versions: dict[int, LoadedVersion] = {}
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.settings.effective_database_url)
            return self._engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        engine = self.engine
        with self._lock:
            if self._sessions is None:
                self._sessions = make_sessionmaker(engine)
            return self._sessions

    @property
    def channels(self) -> dict[str, Channel]:
        with self._lock:
            if self._channels is None:
                self._channels = build_channels(self.settings)
            return self._channels

    def version(self, version_id: int) -> LoadedVersion:
        """The campaign version ``version_id``, parsed once per process.

        Raises:
            LookupError: no such version.
        """
        cached = self._versions.get(version_id)
        if cached is not None:
            return cached
        with self.sessions() as session:
            row = session.execute(
                select(CampaignVersion, Campaign.name)
                .join(Campaign, Campaign.id == CampaignVersion.campaign_id)
                .where(CampaignVersion.id == version_id)
            ).one_or_none()
            if row is None:
                raise LookupError(f"campaign version {version_id} does not exist")
            version, name = row
            loaded = LoadedVersion(
                id=version.id,
                campaign_id=version.campaign_id,
                campaign_name=name,
                version=version.version,
                spec=CampaignSpec.model_validate(version.spec),
                templates=version.templates,
            )
        self._versions[version_id] = loaded
        return loaded

    def close(self) -> None:
        """Close channels and dispose the engine."""
        with self._lock:
            for channel in (self._channels or {}).values():
                channel.close()
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
                self._sessions = None
