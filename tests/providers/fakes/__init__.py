"""Loopback fakes of the cloud providers' real wire protocols (one module per provider).

Each fake is a real server on 127.0.0.1 (port 0) speaking the provider's documented protocol —
message shapes, event order, auth header checks, error events and close codes — with fault modes
(`fault = "drop" | "stall" | "http_429" | "http_500" | "malformed" | ...`) for failure tests and
`latency_s`-style knobs for benchmarks. Usage:

    async with FakeDeepgram(transcripts=["I'm moving house"]) as dg:
        asr = DeepgramAsr.from_options({"api_key": dg.api_key, "url": dg.url})

Import as `from providers.fakes import FakeDeepgram` in the test suite (pytest puts `tests/` on
sys.path), or as `tests.providers.fakes` with the repo root on sys.path (the benchmark).
"""

from .fake_anthropic import FakeAnthropic
from .fake_avr import FakeAvr
from .fake_cartesia import FakeCartesia
from .fake_deepgram import FakeDeepgram
from .fake_elevenlabs import FakeElevenLabs
from .fake_openai_chat import FakeOpenAIChat
from .fake_openai_realtime import FakeOpenAIRealtime

__all__ = [
    "FakeAnthropic",
    "FakeAvr",
    "FakeCartesia",
    "FakeDeepgram",
    "FakeElevenLabs",
    "FakeOpenAIChat",
    "FakeOpenAIRealtime",
]
