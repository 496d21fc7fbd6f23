"""The composed system: scenario topology, actors, text commands, journal, undo."""

from .machine import COMMANDS, OPTIONS, USAGE, CommandError, Machine, Outcome
from .scenario import BUILTIN, Scenario, ScenarioError, load

__all__ = ["BUILTIN", "COMMANDS", "CommandError", "Machine", "OPTIONS", "Outcome", "Scenario",
           "ScenarioError", "USAGE", "load"]
