"""Files: HDF5 patch files, model files, atomic writes (no arithmetic beyond decoding)."""
