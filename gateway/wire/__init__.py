"""The wire contract: record and webhook header names, topic names and the envelope, spelled in one place."""
