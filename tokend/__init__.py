"""tokend: keeps a valid Microsoft Entra token wherever PostgreSQL clients look for a password."""

__version__ = "0.1.0"
