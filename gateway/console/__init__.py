"""`yrdx console`: the operators' web dashboard of an exchange, served by aiohttp with every asset local.

promtext (reading /metrics), figures (rates, quantiles, the snapshot), scraper (the one scrape loop and its
event hub), sessions (operator sign-in, CSRF), exchange (the folder of `yrdx init`), trail (the followed audit
index, journeys), dlq (dead letters and their replay), app (routes and pages); assets/ holds the pages, style
sheet and scripts.
"""
