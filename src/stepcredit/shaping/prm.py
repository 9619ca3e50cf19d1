"""(in progress) reward transforms: prm."""
