"""The networks (U-Net, TernausNet), their tile geometry and initialisation, and the device and precision."""
