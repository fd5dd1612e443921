"""Figures of the stages: matplotlib without a display."""


def pyplot():
    """matplotlib.pyplot on the Agg backend (rules run on headless machines and cluster nodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
