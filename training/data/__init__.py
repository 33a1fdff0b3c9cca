"""Data: the synthetic world, real-data loaders, the click simulator and the table format."""
