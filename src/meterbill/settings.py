"""Runtime configuration, read from `METERBILL_*` environment variables.

Every setting has a default that works with no configuration at all: an SQLite
file in the working directory, created and migrated on first start.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

# The measurement stores METERBILL_MEASUREMENT_STORE may name besides the main database (unset).
CLICKHOUSE_SCHEMES = ("clickhouse", "clickhouses")
CHDB_SCHEME = "chdb"
# The SMTP servers METERBILL_SMTP_URL may name: plain (STARTTLS when the server offers it) or TLS from the start.
SMTP_SCHEMES = ("smtp", "smtps")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METERBILL_", extra="ignore")

    database_url: str = "sqlite:///./meterbill.db"
    host: str = "127.0.0.1"
    port: int = 8000
    # Base URL other systems use to reach us (webhook targets, upload URLs).
    public_url: str | None = None
    # Key for signing tokens and encrypting stored credentials. When unset, one is
    # generated into `secret_key_file` so a single-machine install needs no setup;
    # several hosts must share an explicit key.
    secret_key: str | None = Field(default=None, repr=False)
    secret_key_file: str = "./meterbill.key"
    log_level: str = "INFO"
    # Unset: JSON lines when the log goes to a file or a pipe, readable lines on a terminal.
    log_json: bool | None = None
    # The in-process outbox worker of `meterbill serve`; turn off when dedicated
    # `meterbill worker` processes do the draining.
    embedded_worker: bool = True
    # Threads of the embedded worker: more than one, so a long job (a big file upload)
    # does not hold up webhooks and bill runs queued behind it.
    embedded_worker_threads: int = Field(default=2, ge=1, le=16)
    outbox_batch_size: int = 50
    outbox_poll_seconds: float = 0.2
    # A claimed message is offered to another worker once its lease runs out; a heartbeat
    # renews it (four times per lease) while the worker lives, so a worker killed mid-batch,
    # however long its handler, delays its messages by at most this long.
    outbox_lease_seconds: float = Field(default=15.0, gt=0, le=30)
    outbox_max_attempts: int = 10
    # Seconds between webhook delivery attempts; empty means Chargebee's schedule
    # (2 min, 6 min, 30 min, 1 h, 5 h, 1 day, 2 days).
    webhook_retry_seconds: list[float] = Field(default_factory=list)
    # Modules imported at start-up that may register extra outbox handlers.
    plugins: list[str] = Field(default_factory=list)
    token_ttl_seconds: int = 3600
    # Where measurements live: unset = the main database; a ClickHouse server or an embedded chDB
    # folder otherwise (see `measurement_store_url`). Holds a password: never in a repr or a log.
    measurement_store: str | None = Field(default=None, repr=False)
    # Where billing emails (invoice.send_email, credit_note.send_email, customer.send_payment_request)
    # go out: smtp://[USER:PASSWORD@]HOST[:PORT] (smtps:// for TLS). Unset: those operations are
    # refused, since no email could be sent. Holds a password: never in a repr or a log.
    smtp_url: str | None = Field(default=None, repr=False)
    # The From address of those emails.
    smtp_from: str = "billing@localhost"

    @field_validator("measurement_store")
    @classmethod
    def _known_store(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme == CHDB_SCHEME and not parts.netloc and parts.path.startswith("/"):
            return value
        if parts.scheme in CLICKHOUSE_SCHEMES and parts.hostname:
            return value
        # Raised as a custom error: pydantic's own would prefix "Value error," and the CLI prints only this.
        raise PydanticCustomError("measurement_store", "expected clickhouse://USER:PASSWORD@HOST:8123/DATABASE, "
                                  "clickhouses://... (TLS) or chdb:///ABSOLUTE/PATH, or unset for the main "
                                  "database; got {url}", {"url": masked_url(value)})

    @field_validator("smtp_url")
    @classmethod
    def _smtp_server(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme in SMTP_SCHEMES and parts.hostname:
            return value
        raise PydanticCustomError("smtp_url", "expected smtp://[USER:PASSWORD@]HOST[:PORT] or smtps://..., "
                                  "or unset to send no email; got {url}", {"url": masked_url(value)})

    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def sqlite_folder(self) -> Path | None:
        """The folder of the SQLite database file (None for other databases and in-memory SQLite)."""
        # Imported here: SQLAlchemy's engine costs every CLI command half a second at start, and the
        # commands that only talk to a server never need it.
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
            return None
        return Path(url.database).expanduser().absolute().parent


def masked_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***, fit for a log or an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=user + host).geturl()


@lru_cache
def get_settings() -> Settings:
    return Settings()
