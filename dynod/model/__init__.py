"""Data types: frozen dataclasses, enums and pure validation. Imports nothing of dynod but errors.
"""
