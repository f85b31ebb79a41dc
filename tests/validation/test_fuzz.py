"""No input may make the validator crash: garbage text, random YAML, and the example flow with
random damage all come back as findings with sensible positions (never a traceback)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowagent.flow.validate import validate_text

FLOWS = Path(__file__).resolve().parents[2] / "flows"
REMOVALS = (FLOWS / "removals.yaml").read_text(encoding="utf-8")
REMOVALS_LINES = REMOVALS.splitlines(keepends=True)

_FAST = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _assert_sane(text: str) -> None:
    report = validate_text(text, "fuzz.yaml", environ={})
    n_lines = max(text.count("\n") + 1, 1)
    for f in report.findings:
        assert f.code != "internal-error", f
        assert f.severity in ("error", "warning")
        assert 1 <= f.line <= n_lines + 1, f
        assert f.column >= 1
        assert f.message and "Traceback" not in f.message
    report.to_dict()  # always serialisable


@_FAST
@given(st.text(alphabet=st.sampled_from(list("ab:-_ \n\t{}[]'\"#&*!|>%@`,?0123456789")),
               max_size=300))
def test_garbage_text_never_crashes(text: str) -> None:
    _assert_sane(text)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=20))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(
                                   ["states", "next", "say", "go", "slots", "type", "intent",
                                    "tools", "url", "handlers", "start", "flowagent", "name",
                                    "collect", "when", "ask", "providers", "llm", "x"]),
                                   children, max_size=5)),
    max_leaves=25,
)


@_FAST
@given(yaml_values)
def test_random_yaml_structures_never_crash(value: object) -> None:
    import yaml

    _assert_sane(yaml.safe_dump(value, allow_unicode=True))


@_FAST
@given(st.data())
def test_damaged_example_flow_never_crashes(data: st.DataObject) -> None:
    lines = list(REMOVALS_LINES)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "indent", "dedent", "chars"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "indent":
            lines[i] = "  " + lines[i]
        elif action == "dedent":
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i]
        else:
            s = lines[i]
            j = data.draw(st.integers(0, max(len(s) - 1, 0)))
            bit = data.draw(st.sampled_from(["{{", "}", ":", "'", "x", ""]))
            lines[i] = s[:j] + bit + s[j + 1:]
        if not lines:
            break
    _assert_sane("".join(lines))
