from alembic import context

from meterbill.core.db import make_engine
from meterbill.models import metadata

url = context.config.attributes["database_url"]
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Our SQLite connections run inside explicit BEGIN IMMEDIATE transactions.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
