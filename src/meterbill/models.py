"""Every table, gathered so migrations see the whole schema."""

from meterbill.billing import models as billing_models
from meterbill.connector import models as connector_models
from meterbill.core import outbox
from meterbill.core.db import Base
from meterbill.metering import models as metering_models
from meterbill.metering.store import sql_tables as measurement_store_tables

metadata = Base.metadata

__all__ = [
    "billing_models", "connector_models", "measurement_store_tables", "metadata", "metering_models", "outbox",
]
