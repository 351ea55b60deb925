"""Promotion: choosing the best checkpoints of a rung for the next one, with lineage and a report."""
