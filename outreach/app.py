"""The one place where adapters are chosen: settings in, services out."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from outreach.config import Settings
from outreach.db.contacts import SqlContactStore
from outreach.db.engine import open_database
from outreach.ports import ContactStore


@dataclass
class Services:
    settings: Settings
    engine: Engine
    contacts: ContactStore

    def close(self) -> None:
        self.engine.dispose()


def build(settings: Settings) -> Services:
    """Open (and if needed create or upgrade) the database and wire the services."""
    engine = open_database(settings.database_url)
    return Services(settings=settings, engine=engine, contacts=SqlContactStore(engine))
