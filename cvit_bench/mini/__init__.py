"""The mini world: cvit-mini's synthetic scenes, tiny random models, the shipped mini base, the demo."""
