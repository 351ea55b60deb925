"""Clusters: SLURM submission and status, the generated batch script, and sweeps as job arrays."""
