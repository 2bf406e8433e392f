"""Reading inputs and writing outputs, for local paths (and later s3:// URIs)."""
