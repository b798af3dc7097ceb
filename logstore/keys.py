"""API keys, kept in the log store's database (table ``api_keys``; migration 0002).

A key reads ``csk-<id>-<secret>``: the id is public and indexes the row, the 256-bit secret is stored only
as its SHA-256 (a slow password hash buys nothing for a random secret of that size) and compared in
constant time. The plain key is shown once, at creation, and never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from logstore.db import make_engine
from logstore.schema import Json, UTCDateTime, metadata

PREFIX = "csk"

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("models", Json),
    sa.Column("rpm", sa.Integer),
    sa.Column("tpm", sa.Integer),
    sa.Column("budget_usd", sa.Float),
    sa.Column("budget_period", sa.String(8), nullable=False),
    sa.Column("max_concurrent", sa.Integer),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("revoked", UTCDateTime()),
)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    secret_sha256: str
    models: tuple[str, ...] | None = None  # None: every model
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: Literal["day", "month"] = "day"
    max_concurrent: int | None = None
    created: datetime | None = None
    revoked: datetime | None = None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def public(self) -> dict[str, Any]:
        """Everything but the secret's hash, for listings."""
        return {
            "id": self.id,
            "name": self.name,
            "models": list(self.models) if self.models is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
            "max_concurrent": self.max_concurrent,
            "created": self.created.isoformat() if self.created else None,
            "revoked": self.revoked.isoformat() if self.revoked else None,
        }


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(plain: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    parts = plain.split("-", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def verify(key: ApiKey, secret: str) -> bool:
    return key.revoked is None and hmac.compare_digest(_sha256(secret), key.secret_sha256)


def _from_row(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        secret_sha256=row.secret_sha256,
        models=tuple(row.models) if row.models is not None else None,
        rpm=row.rpm,
        tpm=row.tpm,
        budget_usd=row.budget_usd,
        budget_period=row.budget_period,
        max_concurrent=row.max_concurrent,
        created=row.created,
        revoked=row.revoked,
    )


class KeyStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    async def close(self) -> None:
        await self.engine.dispose()

    async def create(
        self,
        name: str,
        *,
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
        budget_period: Literal["day", "month"] = "day",
        max_concurrent: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its plain form (shown once)."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = ApiKey(
            key_id,
            name,
            _sha256(secret),
            tuple(models) if models else None,
            rpm,
            tpm,
            budget_usd,
            budget_period,
            max_concurrent,
            datetime.now(UTC),
        )
        row = key.public() | {"secret_sha256": key.secret_sha256, "created": key.created, "revoked": None}
        async with self.engine.begin() as connection:
            await connection.execute(api_keys.insert().values(**row))
        return key, f"{PREFIX}-{key_id}-{secret}"

    async def get(self, key_id: str) -> ApiKey | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        return _from_row(row) if row is not None else None

    async def list(self) -> list[ApiKey]:
        async with self.engine.connect() as connection:
            rows = (await connection.execute(sa.select(api_keys).order_by(api_keys.c.created))).all()
        return [_from_row(row) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked.is_(None))
                .values(revoked=datetime.now(UTC))
            )
        return bool(result.rowcount)
