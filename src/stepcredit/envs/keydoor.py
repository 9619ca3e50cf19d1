"""(in progress) environment: keydoor."""
