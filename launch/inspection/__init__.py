"""Data inspection before training: chat and RLVR data statistics and contamination checks against
eval tasks.
"""
