"""Memorization audits: verbatim extraction (greedy / beam continuation of training-text prefixes)."""
