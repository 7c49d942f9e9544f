"""The durable desired state behind the Store protocol; sqlite.py is the embedded default."""
