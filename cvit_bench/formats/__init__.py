"""On-disk formats: one record type and one reader/writer per file the tool writes and another part reads."""
