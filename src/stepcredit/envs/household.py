"""(in progress) environment: household."""
