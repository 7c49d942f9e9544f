"""The durable desired state: protocol.py (the Store and Tx protocols, by aggregate),
migrations.py (the schema), sqlite.py (the embedded default backend), reads.py (the
lookups every layer shares)."""
