"""(in progress) environment: search_qa."""
