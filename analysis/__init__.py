"""Statistics for pairwise human-preference votes: plain numpy / scipy / pandas, no Django or Celery.

Import the functions from their modules, e.g. ``from analysis.bradley_terry import fit_bradley_terry``.
"""
