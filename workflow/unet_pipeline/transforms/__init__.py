"""What is computed from images and labels: cells of a label image, gray-value normalisation."""
