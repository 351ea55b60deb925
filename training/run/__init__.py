"""A training run: the trainer loop, its entry point, checkpoints (local and remote), run files,
heartbeat, watchdog, faults, metrics, progress and tracking, and the callbacks that hook them into
the loop (callbacks/).
"""
