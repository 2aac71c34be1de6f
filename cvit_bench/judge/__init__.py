"""CoIN's General Knowledge track: an LLM judge over prediction files."""
