"""The config: Hydra composition, the typed schema, whole-config validation, names and paths
checks, config diffs and the secret guard.
"""
