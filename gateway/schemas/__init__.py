"""The JSON Schemas of the message types (registry) and the formats they use (check digits, codes, money)."""
