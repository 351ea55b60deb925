"""Where scores live: the content-addressed eval cache, checkpoint identity and references, the
registry and per-run scores.
"""
