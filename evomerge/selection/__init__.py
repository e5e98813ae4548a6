"""Parent selectors (tournament, uniform) and survivor selectors (elitist); base.py says what a selector is."""
from evomerge.selection.base import ParentSelector, SurvivorSelector, sort_key

__all__ = ["ParentSelector", "SurvivorSelector", "sort_key"]
