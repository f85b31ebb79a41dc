"""Tests for flow validation (issue 3)."""
