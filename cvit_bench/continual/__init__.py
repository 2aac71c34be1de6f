"""Continual-learning metrics: pure functions of the accuracy matrix (AP, MAP, BWT, FWT, MIF, He et al.'s AA)."""
