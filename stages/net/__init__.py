"""Network code: the libcurl transport, origin-scoped credentials, the downloader, its ledger."""
