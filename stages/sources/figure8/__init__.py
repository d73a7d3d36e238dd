"""Figure Eight / DeepCell crowd-annotated montages (in progress: issue 8).

Built so far: the job report's reading and broken links (`report.py`), label cleaning
(`labels.py`) and montage geometry (`montage.py`), what the source's fetch, extract-frames and
clean-annotations stages will run. The source itself (conf, stand-in API, stage wiring) is
not registered yet: there is no conf/source/figure8.yaml.
"""
