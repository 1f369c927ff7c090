"""no id reuse: SQLite tables whose ids key history become AUTOINCREMENT (PostgreSQL sequences never reuse)

Request-log rows, budgets, roll-ups and limiter counters are keyed by user, key, model and provider ids; without
AUTOINCREMENT SQLite hands a deleted row's id (the highest) to the next row, which then inherits that history.

Revision ID: 0004_no_id_reuse
Revises: 0003_stored_responses
"""
from alembic import op
import sqlalchemy as sa

revision = "0004_no_id_reuse"
down_revision = "0003_stored_responses"
branch_labels = None
depends_on = None

# table -> request_logs / usage_rollups columns holding its ids (a deleted row's id may live on only there)
TABLES = {
    "providers": ("request_logs.provider_id",),
    "models": ("request_logs.model_id",),
    "users": ("request_logs.user_id", "usage_rollups.user_id"),
    "api_keys": ("request_logs.key_id",),
    "prompts": (),
    "prompt_versions": (),
}


def _foreign_keys_off(bind) -> None:
    """Rebuilding a parent table drops it, and with foreign keys on SQLite would cascade that to its children.

    The pragma is ignored inside a transaction, so the earlier migrations' work is committed first, and this
    connection is detached from the pool: it is closed after the run instead of serving with foreign keys off.
    """
    bind.detach()
    raw = bind.connection.dbapi_connection
    if raw.in_transaction:
        raw.commit()
    raw.execute("PRAGMA foreign_keys=OFF")


def _rebuild(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    _foreign_keys_off(bind)
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True} if autoincrement else {}):
            pass
    problems = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"foreign keys broken by the rebuild: {problems[:5]}")


def _no_reuse_of_logged_ids() -> None:
    """Start each table's counter above every id the log still holds (rows deleted before this migration)."""
    bind = op.get_bind()
    for table, columns in TABLES.items():
        highest = bind.scalar(sa.text(f"SELECT max(id) FROM {table}")) or 0  # noqa: S608 - fixed names
        for ref in columns:
            other, column = ref.split(".")
            highest = max(highest, bind.scalar(sa.text(f"SELECT max({column}) FROM {other}")) or 0)  # noqa: S608
        if highest:
            bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
            bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"), {"t": table, "s": highest})


def upgrade():
    _rebuild(autoincrement=True)
    if op.get_bind().dialect.name == "sqlite":
        _no_reuse_of_logged_ids()


def downgrade():
    _rebuild(autoincrement=False)
