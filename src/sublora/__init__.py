"""sublora: reproduce "Subliminal Learning is a LoRA Artifact" (arXiv:2606.00831) end to end."""
__version__ = "0.1.0"
