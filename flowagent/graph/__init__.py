"""Seeing a flow: its graph model, Mermaid/DOT/HTML text renderings and the SVG layout."""
