"""The model: building it from config or a checkpoint, attention choice, the chunked LM loss, FLOP
counts, the tiny tokenizer and pinned CPU numerics.
"""
