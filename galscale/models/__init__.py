"""The four galscale models: pure torch / escnn modules and their losses. No Ray, no I/O."""
