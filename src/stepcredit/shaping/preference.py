"""(in progress) reward transforms: preference."""
