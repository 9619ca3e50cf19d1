"""(in progress) reward transforms: composite."""
