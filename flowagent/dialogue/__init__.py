"""The pure dialogue engine and what drives it by text: events in, actions out, no I/O in the
engine itself; the call record, the tools runner, the text driver and conversation tests."""
