"""File formats: `jsonstream`, `coco_ct` (COCO Camera Traps), `archives`, `voc`, `coco`,
`video` (frames), `images` (lossless arrays), `labels` (a platform's labels back), `npz`.
"""
