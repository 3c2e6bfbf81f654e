"""Coordination of several daemons that share one vault, through Redis (docs/coordination.md).

Off unless ``jobs.coordination`` is set; nothing here is imported otherwise.
"""
