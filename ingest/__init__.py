"""Job files in, job rows out: parsing, validation, the drop-folder watcher."""
