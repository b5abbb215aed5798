"""The audit trail: its format, each gateway's chain, countersigning, and reading, indexing and verifying it."""
