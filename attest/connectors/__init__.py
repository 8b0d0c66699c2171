"""Connectors read a source into records; they import nothing from Flask or the ORM."""
