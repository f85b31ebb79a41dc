"""`flowagent graph` and the web view draw flow format 2: sub-flow states (a folder shape
naming the file and what it is given), `return` states, `repeat` rounds (a bold loop labelled
with the question) and what a state sets or clears (a second line)."""

from __future__ import annotations

import textwrap

import yaml

from flowagent.graph import model, render

FLOW = textwrap.dedent("""
    flowagent: 2
    name: v2 drawing
    start: verify
    vars: {basket: [], total: 0}
    slots:
      pizza: {type: choice, prompt: "Which pizza?", choices: {margherita: [], pepperoni: []}}
    states:
      verify:
        subflow: parts/verify.yaml
        with: {tries: 3}
        next: order
      order:
        collect: [pizza]
        repeat: {to: vars.basket, ask: "Anything else?"}
        next: total
      total:
        set: {vars.total: "vars.basket | length"}
        clear: [slots.pizza]
        say: That's {{ vars.total }} pizzas.
        next: done
      done:
        return: {total: vars.total}
""")


def graph() -> model.FlowGraph:
    return model.build_graph(yaml.safe_load(FLOW))


def test_the_model_knows_subflows_returns_repeats_and_changes() -> None:
    g = graph()
    assert g.nodes["verify"].kind == "subflow"
    assert g.nodes["verify"].detail == "runs sub-flow parts/verify.yaml with tries"
    assert g.nodes["done"].kind == "return" and g.nodes["done"].terminal
    assert g.nodes["done"].detail == "returns total"
    assert g.nodes["order"].detail == "collects: pizza · adds to basket"
    assert g.nodes["total"].changes == "sets vars.total · clears slots.pizza"
    [loop] = [e for e in g.edges if e.kind == "repeat"]
    assert (loop.source, loop.target, loop.label) == ("order", "order",
                                                      "repeat: Anything else? yes")
    assert not g.unreachable


def test_mermaid_dot_and_svg_draw_them() -> None:
    g = graph()
    mermaid, dot, svg = render.to_mermaid(g), render.to_dot(g), render.to_svg(g)
    assert '  s_verify[\\"verify<br/><small>runs sub-flow parts/verify.yaml with tries' in mermaid
    assert '  s_done[/"done<br/><small>returns total</small>"\\]' in mermaid
    assert '  s_order ==>|"repeat: Anything else? yes"| s_order' in mermaid
    assert "<small>sets vars.total · clears slots.pizza</small>" in mermaid
    assert "shape=folder" in dot and "shape=invhouse" in dot
    assert 's_order -> s_order [label="repeat: Anything else? yes", style=bold' in dot
    assert 'class="node kind-subflow' in svg and 'class="edge edge-repeat"' in svg
    assert "sets vars.total · clears slots.pizza" in svg
