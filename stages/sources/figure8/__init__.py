"""Figure Eight / DeepCell crowd-annotated montages (in progress: issue 8).

Built so far: label cleaning (`labels.py`) and montage geometry (`montage.py`), the image
processing the source's extract-frames and clean-annotations stages will run. The source
itself (conf, fetch, stage wiring) is not registered yet: there is no conf/source/figure8.yaml.
"""
