"""What a run or study leaves for a reader: `autoheri report`'s inputs (inputs.py), figures
(figures.py, calibration.py) and page (page.py), and TensorBoard scalars (tensorboard.py)."""
