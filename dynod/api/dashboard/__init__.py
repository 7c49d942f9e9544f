"""The web dashboard: server-rendered pages over HTTPS (``dashboard_listen``) for the
same users, through the same use cases as the gRPC API (dynod/control/*)."""
