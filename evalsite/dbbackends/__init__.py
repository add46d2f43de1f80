"""Database backends: Django's own, with what a restart of the database server needs."""
