"""Routing: the protocol the runtime drives, HAProxy's configuration and runtime API, router log
lines.
"""
