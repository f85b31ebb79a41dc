"""The removals company's fake API now lives in the package (`flowagent demo` starts it);
kept here so tests import it by its old name."""

from flowagent.demo.removals_api import FakeRemovalsApi

__all__ = ["FakeRemovalsApi"]
