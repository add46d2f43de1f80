"""The demo: `manage.py seed_demo` registers the committed demo models and opens a comparison to vote on.

This app sits above the others (it seeds catalog, runs and rating, so it may import them all; none of them
imports it). It has no models of its own.
"""
