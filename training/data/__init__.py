"""Training data: chat and preference rows, packing, mixtures of sources, the token cache and the
shipped synthetic task.
"""
