"""Planning before launch: memory, GPU-hours and tokens, per-rung rates, document lengths, and RL's
plan.
"""
