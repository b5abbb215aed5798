"""Signing, verification and the development PKI."""
