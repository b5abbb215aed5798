"""The audit trail: its format, the chain each gateway writes, countersigning, and reading, indexing and
verifying it."""
