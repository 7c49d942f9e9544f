"""dynoctl: a gRPC client of dynod and nothing else."""
