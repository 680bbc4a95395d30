"""Total variation, Tikhonov deconvolution and plug-and-play for inverse problems (chapter 16)."""
