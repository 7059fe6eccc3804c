"""Data sets as uint8 image arrays: loaders, splits, image files, the image cache, batches."""
