"""responses: stored Responses API answers for previous_response_id and GET /v1/responses/{id}

Revision ID: 0003_stored_responses
Revises: 0002_ops
"""
from alembic import op
import sqlalchemy as sa

revision = "0003_stored_responses"
down_revision = "0002_ops"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "stored_responses",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("previous_response_id", sa.String(length=64), nullable=True),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("stored_responses", schema=None) as batch_op:
        batch_op.create_index("ix_stored_responses_user_id", ["user_id"], unique=False)
        batch_op.create_index("ix_stored_responses_created_at", ["created_at"], unique=False)


def downgrade():
    with op.batch_alter_table("stored_responses", schema=None) as batch_op:
        batch_op.drop_index("ix_stored_responses_created_at")
        batch_op.drop_index("ix_stored_responses_user_id")
    op.drop_table("stored_responses")
