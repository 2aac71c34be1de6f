"""Data preparation: source files to prepared parquet splits, instruction templates, prompt formats, images, export."""
