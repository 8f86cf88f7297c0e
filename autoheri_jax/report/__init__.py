"""What a run or study leaves for a reader: `autoheri report`'s inputs (inputs.py), figures
(figures.py, calibration.py) and page (page.py). (TensorBoard scalars are a workdir's file:
artifacts/tensorboard.py.)"""
