"""One module per OS interface (systemd, netlink, mounts, cgroups, journald, processes). Imports
nothing above it.
"""
