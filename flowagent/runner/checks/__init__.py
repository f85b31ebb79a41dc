"""The individual flow checks used by `flowagent.runner.validate` (one concern per module)."""
