"""Low rank, spectra and orthogonality: nuclear norm, SVT, soft-impute, spectral norms (chapter 05)."""
