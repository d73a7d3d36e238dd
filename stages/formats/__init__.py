"""File formats: streaming JSON, COCO Camera Traps, archives, VOC, npz."""
