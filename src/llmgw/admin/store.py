"""The admin store interface: managed keys, tenants and teams.

``SQLiteStore`` keeps them in a SQLite file for a gateway without Redis, and
``RedisStore`` keeps them in Redis for any number of workers. Both tell their
listeners about every change: the SQLite store at once, the Redis store also
for changes made by other workers, within one second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from llmgw.admin.records import KeyMatch, ManagedKey, Team, Tenant
from llmgw.errors import ClientError

if TYPE_CHECKING:
    from llmgw.config import Config

# The file, in the working folder, for managed records when neither Redis nor
# a SQLite ledger is configured.
DEFAULT_STORE_FILE = "llmgw-admin.db"


class Conflict(ClientError):
    """A name that is taken, or a change that the record's state forbids."""

    status = 409
    code = "conflict"


class Store(Protocol):
    @property
    def fresh(self) -> bool:
        """Whether every change made by other workers up to one second ago has
        reached the listeners. False while Redis cannot be reached."""
        ...

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every change, whichever worker made it."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` if the store cannot be reached."""
        ...

    async def find_key(self, digest: str) -> KeyMatch | None:
        """Return the key with a secret whose SHA-256 hex digest is ``digest``,
        with its tenant and team records from this store.

        A secret past its rotation grace may still be found; the caller checks
        ``KeySecret.valid_until``.
        """
        ...

    async def get_org(
        self, tenant: str, team: str | None
    ) -> tuple[Tenant | None, Team | None]:
        """Return the records of a tenant and one of its teams, None if absent."""
        ...

    async def create_key(self, key: ManagedKey) -> None:
        """Store a new key.

        Raises ``Conflict`` if an active key has its name, or if another
        create or rename to that name is in progress.
        """
        ...

    async def get_key(self, key_id: str) -> ManagedKey | None: ...

    async def list_keys(self) -> list[ManagedKey]:
        """Return every key, revoked ones included, oldest first."""
        ...

    async def save_key(self, old: ManagedKey, new: ManagedKey) -> None:
        """Replace ``old`` by ``new``, a changed copy with the same id.

        Raises ``Conflict`` if ``new`` takes the name of another active key.
        A revoked key gives up its name.

        NOTE: nothing checks that the stored record still equals ``old``, so
        of two concurrent changes to one record the later write wins whole.
        """
        ...

    async def create_tenant(self, tenant: Tenant) -> None:
        """Store a new tenant. Raises ``Conflict`` if the name exists."""
        ...

    async def get_tenant(self, name: str) -> Tenant | None: ...

    async def list_tenants(self) -> list[Tenant]:
        """Return every tenant, ordered by name."""
        ...

    async def save_tenant(self, tenant: Tenant) -> None: ...

    async def delete_tenant(self, name: str) -> None:
        """Delete a tenant and its teams."""
        ...

    async def create_team(self, team: Team) -> None:
        """Store a new team. Raises ``Conflict`` if its tenant has one of that
        name."""
        ...

    async def get_team(self, tenant: str, name: str) -> Team | None: ...

    async def list_teams(self, tenant: str) -> list[Team]:
        """Return the tenant's teams, ordered by name."""
        ...

    async def save_team(self, team: Team) -> None: ...

    async def delete_team(self, tenant: str, name: str) -> None: ...


def name_taken(name: str, holder: str) -> Conflict:
    return Conflict(
        f"An active key named {name!r} exists (id {holder}). Choose another name, "
        "or revoke that key first."
    )


def store_path(config: Config) -> str:
    """Return the SQLite file of the embedded admin store.

    It is ``admin.store`` when set, else the ledger's SQLite file (in tables
    of its own), else ``llmgw-admin.db`` in the working folder.
    """
    for url in (config.admin.store, config.ledger.sink):
        if url is not None and url.startswith("sqlite:///"):
            return url.removeprefix("sqlite:///")
    return DEFAULT_STORE_FILE


def open_store(config: Config) -> Store:
    """Create the store the configuration names; the caller opens it."""
    if config.redis is not None:
        from llmgw.admin.redis_store import RedisStore

        return RedisStore.from_url(
            config.redis.url,
            prefix=config.redis.key_prefix,
            cluster=config.redis.cluster,
            cluster_nodes=config.redis.cluster_addresses,
        )

    from llmgw.admin.sqlite_store import SQLiteStore

    return SQLiteStore(store_path(config))
