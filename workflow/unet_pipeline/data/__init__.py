"""Data and stores: sources and their transfer, readers of image files, the OME-Zarr volume store and pyramids."""
