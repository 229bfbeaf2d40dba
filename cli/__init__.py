"""The `vrconvert` command line."""
