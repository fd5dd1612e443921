"""Cells from a foreground probability map: the segment stage's methods, as small composable steps.

``proposal``: how instance labels become the binarised proposal the ISBI metrics score;
``fragments``: a seeded watershed over-segmentation of the boundary map 1 - p;
``graph``: the fragments' region adjacency graph as an edge table with boundary evidence, and its
partition (multicut, mean linkage);
``methods``: the ``segmentation.method`` options and one section's cells by each method;
``blockwise``: the same steps block by block, joined across block faces (sections or 3D volumes);
``work``: the work folder that lets a killed blockwise segmentation continue;
``volume``: the blockwise segmentation of a whole prediction, step by step.
"""
