"""What ties stages to conf/ and DVC: `compose` (params.yaml from conf/), `params` (reading it
back), `explain`, `entry` (the shared stage entry), `restore` and `previous` (a stage's last
build from dvc.lock), `revisions` (a manifest at a git revision), `plots_page`.
"""
