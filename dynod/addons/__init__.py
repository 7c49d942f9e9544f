"""The servers behind add-ons: a PostgreSQL cluster, Redis instances, and backups."""
