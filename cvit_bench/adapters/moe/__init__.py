"""The ``cvit-moe`` adapter format of the mixture-of-LoRA methods."""
