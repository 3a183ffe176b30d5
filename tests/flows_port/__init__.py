"""Importable helpers for test_composite, test_templates, test_invokers and test_port.

meta.yaml files name callables and invoker classes by dotted path, so they must live in an
importable module: ``tests.flows_port.<module>``.
"""
