"""(in progress) reward transforms: length."""
