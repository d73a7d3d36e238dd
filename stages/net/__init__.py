"""Network code: `transport` (libcurl), `retry` (the one retry policy), `credentials`
(origin-scoped secrets), `download` (the downloader and its object cache), `ledger` (per-URL
outcomes), `verify` (body checks), `sharing` (one cache for concurrent runs).
"""
