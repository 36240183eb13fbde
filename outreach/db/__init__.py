"""Storage: SQLAlchemy models, Alembic migrations and the repositories behind ports."""
