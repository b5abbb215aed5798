"""Files that travel as claim checks (README "Files (claim checks)"): chunks.py seals a file's chunks,
manifest.py is its signed last record, sender.py streams an upload to the destination's files topic,
assembler.py reads the region's files topic into the spool (store.py), and claims.py holds a message back until
the files it references have arrived whole.

Nothing is re-exported here: relay/egress.py imports claims.py, and assembler.py imports the relay's checks.
"""
