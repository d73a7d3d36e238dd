"""Network code: `transport` (libcurl), `retry` (the one retry policy), `credentials`
(origin-scoped secrets), `cache` (the object cache: objects, scratch paths, part files),
`download` (the downloader: transfers, redirects, verification, ledger writes), `batches`
(downloads as Dask tasks), `ledger` (per-URL outcomes), `listings` (small cached JSON documents),
`verify` (body checks), `sharing` (one cache for concurrent runs).
"""
