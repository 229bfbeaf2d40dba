"""Reading and writing files: torch checkpoints (zip, legacy, safetensors), Keras files, downloads and
atomic, no-clobber outputs. Every byte read here is untrusted."""
