"""The dyno runtime: the supervisor (plan, then act), dyno roots and networks, one-offs, the
release phase, gc.
"""
