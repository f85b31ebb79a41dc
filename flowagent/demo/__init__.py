"""What `flowagent demo` needs besides the command itself: the removals company's pricing and
booking API faked on loopback (`removals_api`), and a copy of flows/removals.yaml so the demo
also runs from an installed wheel (tests/test_demo_files.py keeps the copy in step)."""

from pathlib import Path

#: the removals flow shipped with the package
DEMO_FLOW = Path(__file__).resolve().parent / "removals.yaml"
