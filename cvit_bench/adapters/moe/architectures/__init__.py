"""One module per mixture-of-LoRA method: its options, layers, model-level modules and hooks."""
