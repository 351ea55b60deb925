"""Engines spread a model over processes (single, DDP, FSDP2, DeepSpeed ZeRO), the process group,
and consolidation of sharded checkpoints.
"""
