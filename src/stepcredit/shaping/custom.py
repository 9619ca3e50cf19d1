"""(in progress) reward transforms: custom."""
