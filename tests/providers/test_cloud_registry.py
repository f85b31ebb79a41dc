"""The registry table (read by the validator) agrees with what each cloud provider accepts."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from flowagent.providers import registry
from flowagent.providers.cloudutil import build_options
from flowagent.providers.deepgram import DeepgramOptions

CLOUD = [s for s in registry.all_specs() if s.cloud]
JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "str": "string",
              "list": "array", "dict": "object"}


def test_every_cloud_kind_has_its_providers() -> None:
    names = {(s.kind, s.name) for s in CLOUD}
    assert {("asr", "deepgram"), ("llm", "openai"), ("llm", "groq"), ("llm", "anthropic"),
            ("tts", "cartesia"), ("tts", "elevenlabs"), ("sts", "openai_realtime"),
            ("asr", "avr"), ("llm", "avr"), ("tts", "avr"), ("sts", "avr")} <= names


@pytest.mark.parametrize("spec", CLOUD, ids=lambda s: f"{s.kind}:{s.name}")
def test_registry_options_match_the_provider(spec: registry.ProviderSpec) -> None:
    module, _, cls_name = spec.target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    inst = registry.create(spec.kind, spec.name, {})
    options_cls = type(inst.options)
    fields = {f.name: str(f.type).split(" ")[0].split("[")[0] for f in
              dataclasses.fields(options_cls)}
    assert set(spec.options) == set(fields), f"{spec.name}: registry and options class differ"
    for name, jtype in spec.options.items():
        assert JSON_TYPES[fields[name]] == jtype, f"{spec.name}.{name}"
    assert set(spec.required) <= set(spec.options)
    assert isinstance(inst, cls)


def test_env_strings_are_coerced_to_option_types() -> None:
    o = build_options(DeepgramOptions, {"endpointing_ms": "250", "interim_results": "false",
                                        "keepalive_s": "2.5", "keyterms": "Pickfords, Luton van"},
                      "Deepgram")
    assert (o.endpointing_ms, o.interim_results, o.keepalive_s) == (250, False, 2.5)
    assert o.keyterms == ["Pickfords", "Luton van"]
    with pytest.raises(ValueError, match="not a whole number"):
        build_options(DeepgramOptions, {"endpointing_ms": "soon"}, "Deepgram")
