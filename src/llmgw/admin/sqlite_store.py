"""The embedded admin store: managed records in a SQLite file.

The gateway without Redis runs in one process, so this store loads every
record into memory when it opens and serves reads from there. Each change is
written to the file in one transaction before memory changes, so a restart
finds what the last successful change left.

Tables, each with a JSON document per row: ``llmgw_admin_keys``,
``llmgw_admin_tenants`` and ``llmgw_admin_teams``. They may share the file
with the SQLite ledger.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import aiosqlite
import orjson
import structlog

from llmgw.admin.records import (
    KeyMatch,
    ManagedKey,
    Team,
    Tenant,
    key_from_doc,
    key_to_doc,
    team_from_doc,
    team_to_doc,
    tenant_from_doc,
    tenant_to_doc,
)
from llmgw.admin.store import Conflict, name_taken
from llmgw.errors import BackendUnavailable

log = structlog.get_logger("llmgw.admin.store")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS llmgw_admin_keys "
    "(id TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS llmgw_admin_tenants "
    "(name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS llmgw_admin_teams "
    "(tenant TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL, "
    "PRIMARY KEY (tenant, name))",
)

Statement = tuple[str, Sequence[Any]]


def _json(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


class SQLiteStore:
    """Managed keys, tenants and teams in a SQLite file, for one process."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: aiosqlite.Connection | None = None
        # Serialises changes, so each check for a taken name and the write
        # that follows it see the same records.
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._keys: dict[str, ManagedKey] = {}
        self._key_by_secret: dict[str, str] = {}
        self._tenants: dict[str, Tenant] = {}
        self._teams: dict[tuple[str, str], Team] = {}

    @property
    def fresh(self) -> bool:
        # Only this process changes the file while the gateway runs.
        return True

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    async def open(self) -> None:
        with self._translate_errors("open"):
            conn = await aiosqlite.connect(self._path, isolation_level=None)
            try:
                await conn.execute(
                    f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}"
                )
                await conn.execute("PRAGMA journal_mode = WAL")
                for statement in _SCHEMA:
                    await conn.execute(statement)
                await self._load(conn)
            except BaseException:
                await conn.close()
                raise
        self._conn = conn
        log.info(
            "admin_store_opened",
            path=self._path,
            keys=len(self._keys),
            tenants=len(self._tenants),
            teams=len(self._teams),
        )

    async def _load(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("SELECT doc FROM llmgw_admin_keys") as cursor:
            keys = [key_from_doc(orjson.loads(row[0])) async for row in cursor]
        for key in sorted(keys, key=lambda k: k.created):
            self._put_key(key)
        async with conn.execute("SELECT doc FROM llmgw_admin_tenants") as cursor:
            async for row in cursor:
                tenant = tenant_from_doc(orjson.loads(row[0]))
                self._tenants[tenant.name] = tenant
        async with conn.execute("SELECT doc FROM llmgw_admin_teams") as cursor:
            async for row in cursor:
                team = team_from_doc(orjson.loads(row[0]))
                self._teams[(team.tenant, team.name)] = team

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def ping(self) -> None:
        with self._translate_errors("ping"):
            await self._connection().execute("SELECT 1")

    # Reads, from memory

    async def find_key(self, digest: str) -> KeyMatch | None:
        key_id = self._key_by_secret.get(digest)
        if key_id is None:
            return None
        key = self._keys[key_id]
        tenant, team = (None, None)
        if key.tenant is not None:
            tenant, team = await self.get_org(key.tenant, key.team)
        return KeyMatch(key=key, tenant=tenant, team=team)

    async def get_org(
        self, tenant: str, team: str | None
    ) -> tuple[Tenant | None, Team | None]:
        team_record = None if team is None else self._teams.get((tenant, team))
        return self._tenants.get(tenant), team_record

    async def get_key(self, key_id: str) -> ManagedKey | None:
        return self._keys.get(key_id)

    async def list_keys(self) -> list[ManagedKey]:
        return list(self._keys.values())

    async def get_tenant(self, name: str) -> Tenant | None:
        return self._tenants.get(name)

    async def list_tenants(self) -> list[Tenant]:
        return [self._tenants[name] for name in sorted(self._tenants)]

    async def get_team(self, tenant: str, name: str) -> Team | None:
        return self._teams.get((tenant, name))

    async def list_teams(self, tenant: str) -> list[Team]:
        names = sorted(name for (owner, name) in self._teams if owner == tenant)
        return [self._teams[(tenant, name)] for name in names]

    # Changes: the file first, then memory, then the listeners

    async def create_key(self, key: ManagedKey) -> None:
        async with self._lock:
            self._check_name(key)
            await self._write(
                [
                    (
                        "INSERT INTO llmgw_admin_keys VALUES (?, ?)",
                        (key.id, _json(key_to_doc(key))),
                    )
                ]
            )
            self._put_key(key)
        self._notify()

    async def save_key(self, old: ManagedKey, new: ManagedKey) -> None:
        async with self._lock:
            self._check_name(new)
            await self._write(
                [
                    (
                        "UPDATE llmgw_admin_keys SET doc = ? WHERE id = ?",
                        (_json(key_to_doc(new)), new.id),
                    )
                ]
            )
            for secret in self._keys[old.id].secrets:
                self._key_by_secret.pop(secret.sha256, None)
            self._put_key(new)
        self._notify()

    async def create_tenant(self, tenant: Tenant) -> None:
        async with self._lock:
            if tenant.name in self._tenants:
                raise Conflict(f"A tenant named {tenant.name!r} exists.")
            doc = _json(tenant_to_doc(tenant))
            await self._write(
                [("INSERT INTO llmgw_admin_tenants VALUES (?, ?)", (tenant.name, doc))]
            )
            self._tenants[tenant.name] = tenant
        self._notify()

    async def save_tenant(self, tenant: Tenant) -> None:
        async with self._lock:
            doc = _json(tenant_to_doc(tenant))
            await self._write(
                [
                    (
                        "UPDATE llmgw_admin_tenants SET doc = ? WHERE name = ?",
                        (doc, tenant.name),
                    )
                ]
            )
            self._tenants[tenant.name] = tenant
        self._notify()

    async def delete_tenant(self, name: str) -> None:
        async with self._lock:
            await self._write(
                [
                    ("DELETE FROM llmgw_admin_teams WHERE tenant = ?", (name,)),
                    ("DELETE FROM llmgw_admin_tenants WHERE name = ?", (name,)),
                ]
            )
            self._tenants.pop(name, None)
            for team_key in [k for k in self._teams if k[0] == name]:
                del self._teams[team_key]
        self._notify()

    async def create_team(self, team: Team) -> None:
        async with self._lock:
            if (team.tenant, team.name) in self._teams:
                raise Conflict(
                    f"Tenant {team.tenant!r} already has a team named {team.name!r}."
                )
            doc = _json(team_to_doc(team))
            await self._write(
                [
                    (
                        "INSERT INTO llmgw_admin_teams VALUES (?, ?, ?)",
                        (team.tenant, team.name, doc),
                    )
                ]
            )
            self._teams[(team.tenant, team.name)] = team
        self._notify()

    async def save_team(self, team: Team) -> None:
        async with self._lock:
            doc = _json(team_to_doc(team))
            await self._write(
                [
                    (
                        "UPDATE llmgw_admin_teams SET doc = ? "
                        "WHERE tenant = ? AND name = ?",
                        (doc, team.tenant, team.name),
                    )
                ]
            )
            self._teams[(team.tenant, team.name)] = team
        self._notify()

    async def delete_team(self, tenant: str, name: str) -> None:
        async with self._lock:
            await self._write(
                [
                    (
                        "DELETE FROM llmgw_admin_teams WHERE tenant = ? AND name = ?",
                        (tenant, name),
                    )
                ]
            )
            self._teams.pop((tenant, name), None)
        self._notify()

    # Helpers

    def _check_name(self, key: ManagedKey) -> None:
        if key.status != "active":
            return
        for other in self._keys.values():
            if (
                other.id != key.id
                and other.status == "active"
                and other.name == key.name
            ):
                raise name_taken(key.name, other.id)

    def _put_key(self, key: ManagedKey) -> None:
        self._keys[key.id] = key
        for secret in key.secrets:
            self._key_by_secret[secret.sha256] = key.id

    async def _write(self, statements: Sequence[Statement]) -> None:
        conn = self._connection()
        with self._translate_errors("write"):
            # IMMEDIATE takes the write lock now, under the busy timeout.
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    await conn.execute(sql, params)
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("the SQLite admin store is not open: call open() first")
        return self._conn

    @contextmanager
    def _translate_errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(
                f"SQLite admin store {operation} failed on {self._path}: {exc}"
            ) from exc
