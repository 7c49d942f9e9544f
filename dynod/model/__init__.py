"""Data types: frozen dataclasses, enums and pure validation. Imports nothing of dynod but
errors. events.py also holds the small synchronous EventBus the control plane publishes
its committed changes on."""
