"""Library code every stage shares, below every other package (it imports none of them).

`config` (the conf schemas), `errors`, `store` (the item store: Parquet manifest and tar
shards), `executor` (the one executor interface, run locally; `cluster`: the Dask one),
`parallel` (bounded maps on this machine), `files` (atomic writes, spools), `metrics`,
`selection` (classes, seeded ranking, caps, budget), `splits`, `gates` (exact and near
copies), `gallery`, `boxes`, `origins`, `itemdiff`.
"""
