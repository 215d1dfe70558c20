"""The Lab: experiments on throw-away `lab-*` topics, groups and consumer workers (docs/lab.md).

Standard library only at import: `python -m pipeline` registers the `lab` commands at start-up.
"""
