"""The HTTP edge of a gateway: the aiohttp API and the callers' authentication."""
