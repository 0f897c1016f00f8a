"""A training run: the session (open, resume, write), the L-BFGS loop, checkpoints, gradcheck."""
