"""Evaluation: checkpoint sequences, the runner (base loaded once, adapters swapped), provenance."""
