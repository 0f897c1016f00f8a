"""The process around the computation: MPI reduction (a no-op for one process) and signals."""
