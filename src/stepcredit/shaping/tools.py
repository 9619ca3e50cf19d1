"""(in progress) reward transforms: tools."""
