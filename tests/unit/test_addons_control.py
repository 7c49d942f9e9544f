"""Add-ons: the store's records (migration v6) and the control plane's use cases
(``dynod.control.addons``) against a fake :class:`AddonServices`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dynod.model.addons import (
    POSTGRES,
    REDIS,
    Addon,
    AddonState,
    Attachment,
    Backup,
    BackupStatus,
    Credentials,
)
from dynod.model.apps import App
from dynod.store.sqlite import SqliteStore

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CREDS = Credentials("10.213.0.1", 5432, "u_pg", "secret/pw", "d_pg")


def _addon(name: str, app: str, service: str = POSTGRES) -> Addon:
    plan = "essential-0" if service == POSTGRES else "mini"
    return Addon(name, service, plan, app, AddonState.CREATED, NOW, CREDS)


def test_store_keeps_addons_attachments_and_backups(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    with store.write() as tx:
        tx.add_app(App("shop", "jane", NOW))
        tx.add_app(App("blog", "jane", NOW))
        tx.insert_addon(_addon("postgresql-curved-12345", "shop"))
        tx.insert_addon(_addon("redis-flat-11111", "blog", REDIS))
        tx.insert_attachment(Attachment("postgresql-curved-12345", "shop", "DATABASE", NOW))
        tx.insert_attachment(Attachment("postgresql-curved-12345", "blog", "SHOP_DB", NOW))
        tx.insert_attachment(Attachment("redis-flat-11111", "blog", "REDIS", NOW))
        tx.insert_backup(Backup("b001", "postgresql-curved-12345", "shop", NOW, None, 0, "",
                                BackupStatus.RUNNING, "", {}))
    store.close()
    store = SqliteStore.open(tmp_path / "state.db")  # durable
    with store.write() as tx:
        assert tx.get_addon("postgresql-curved-12345") == _addon("postgresql-curved-12345",
                                                                  "shop")
        assert [a.name for a in tx.list_addons()] == ["postgresql-curved-12345",
                                                      "redis-flat-11111"]
        assert [a.name for a in tx.list_addons("blog")] == ["redis-flat-11111"]
        assert [(a.app, a.name) for a in tx.list_attachments(addon="postgresql-curved-12345")
                ] == [("blog", "SHOP_DB"), ("shop", "DATABASE")]
        assert [a.name for a in tx.list_attachments("blog")] == ["REDIS", "SHOP_DB"]
        rotated = Addon("postgresql-curved-12345", POSTGRES, "essential-0", "shop",
                        AddonState.CREATED, NOW, Credentials("10.213.0.1", 5432, "u_pg",
                                                             "new", "d_pg"))
        tx.update_addon(rotated)
        assert tx.get_addon(rotated.name) == rotated
        done = Backup("b001", "postgresql-curved-12345", "shop", NOW, NOW, 42, "ab",
                      BackupStatus.VERIFIED, "", {"items": 3}, scheduled=True)
        tx.update_backup(done)
        assert tx.get_backup("shop", "b001") == done
        assert tx.list_backups("shop") == [done]
        assert tx.get_backup("blog", "b001") is None
        tx.delete_attachment("postgresql-curved-12345", "blog")
        assert [a.name for a in tx.list_attachments("blog")] == ["REDIS"]
        # Removing an app removes what it owns and every attachment of its add-ons.
        tx.insert_attachment(Attachment("postgresql-curved-12345", "blog", "SHOP_DB", NOW))
        tx.remove_app("shop")
        assert tx.get_addon("postgresql-curved-12345") is None
        assert [a.name for a in tx.list_attachments()] == ["REDIS"]
        tx.delete_backup("blog", "b001")
        tx.delete_addon("redis-flat-11111")
        assert tx.list_attachments() == [] and tx.list_addons() == []


def test_attachment_names_are_unique_per_app(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    with store.write() as tx:
        tx.add_app(App("shop", "jane", NOW))
        tx.insert_addon(_addon("postgresql-curved-12345", "shop"))
        tx.insert_addon(_addon("postgresql-round-22222", "shop"))
        tx.insert_attachment(Attachment("postgresql-curved-12345", "shop", "DATABASE", NOW))
    with pytest.raises(Exception, match="UNIQUE"), store.write() as tx:
        tx.insert_attachment(Attachment("postgresql-round-22222", "shop", "DATABASE", NOW))
