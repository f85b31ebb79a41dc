"""The individual flow checks used by `flowagent.flow.validate` (one concern per module)."""
