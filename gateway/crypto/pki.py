"""Transitional: the key and certificate loaders moved to gateway.crypto.keyfiles (issuance to gateway.dev.pki).

Kept only until every importer names gateway.crypto.keyfiles; it defines nothing of its own.
"""

from gateway.crypto.keyfiles import load_certificate, load_encryption_key, load_encryption_pub, load_private_key

__all__ = ["load_certificate", "load_encryption_key", "load_encryption_pub", "load_private_key"]
