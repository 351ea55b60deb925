"""Recipes (SFT, DPO): the loss table, the recipe protocol and make_recipe, and DPO's reference
model with its cache.
"""
