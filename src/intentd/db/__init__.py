"""Database access: connections, migrations, and one module of named queries per table group."""
