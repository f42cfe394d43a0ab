"""Database schema, engines and migrations."""

from imgq.db.engine import get_engine, session_scope
from imgq.db.migrate import upgrade

__all__ = ["get_engine", "session_scope", "upgrade"]
