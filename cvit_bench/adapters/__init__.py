"""Adapter formats of cvit-bench's own methods (read by training, import and evaluation alike)."""
