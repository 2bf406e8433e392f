"""Runners: claim batches of one model, run them through adapters, write outputs."""
