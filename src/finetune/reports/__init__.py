"""What a run leaves for people to read: figures (PNG + TensorBoard) and Markdown summaries."""
