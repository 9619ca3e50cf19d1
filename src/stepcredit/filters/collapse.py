"""(in progress) credit filters: collapse."""
