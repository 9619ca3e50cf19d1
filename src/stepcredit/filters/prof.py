"""(in progress) credit filters: prof."""
