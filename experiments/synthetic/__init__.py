"""Synthetic study of the paper's theory: clipping under heavy-tailed noise (RQ2) and dimension (RQ3)."""
