"""Sparse inverse covariance: the graphical lasso with screening (chapter 06)."""
