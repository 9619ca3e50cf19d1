"""(in progress) environment: sokoban."""
