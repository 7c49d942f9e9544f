"""Control-plane use cases: each commits, then publishes one event."""
