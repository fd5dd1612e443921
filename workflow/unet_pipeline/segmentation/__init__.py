"""Cells from a foreground probability map: the segment stage's methods, as small composable steps.

``proposal``: how instance labels become the binarised proposal the ISBI metrics score;
``fragments``: a seeded watershed over-segmentation of the boundary map 1 - p;
``graph``: the fragments' region adjacency graph with boundary features, and its partition
(multicut, mean linkage);
``methods``: the ``segmentation.method`` options and one section's cells by each method.
"""
