"""Format 2's steps, each in its own small module so `engine.py` only wires them in: working
out values (`assign`), named run-time failures (`faults`), the loop guard, lists and repeats,
run-time choices, sub-flow frames and the clock."""
