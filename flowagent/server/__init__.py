"""The process around the calls: shared runtime, AudioSocket server, control API, webhooks,
metrics and the call-record store."""
