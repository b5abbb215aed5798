"""The NHSA counter facade (issue 11): a hospital's HIS speaks its national transaction envelope, the gateway
relays canonical messages request-reply. ``envelope`` reads and writes the envelope, ``transactions`` maps each
infno onto its canonical type, ``code_tables`` and ``infcodes`` hold the NHSA tables, ``routes`` the HTTP route.
"""
