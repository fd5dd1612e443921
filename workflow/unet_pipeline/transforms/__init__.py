"""What is computed from images and labels: augmentation (the paper's elastic deformation), the loss weight
map, cells of a label image, gray-value normalisation."""
