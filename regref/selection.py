"""Choosing the regularization strength: cross-validation, LOO/GCV, SURE, evidence, hypergradients (chapter 03)."""
