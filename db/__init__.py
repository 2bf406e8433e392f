"""Job tables, engines for SQLite and PostgreSQL, and the queue's statements."""
