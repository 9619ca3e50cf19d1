"""(in progress) environment: arith_chain."""
