"""Analysers: one module per thing read from the pixels (objects, colours, …)."""
