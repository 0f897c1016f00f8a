"""From images to a patch file: sources and readers, patch sampling, normalisation."""
