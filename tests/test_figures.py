"""Figures: one PNG per figure in the run folder, and the same PNG bytes in TensorBoard."""

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from finetune.reports.figures import FigureSink


def test_tensorboard_holds_the_bytes_of_the_png_written(tmp_path):
    figure = Figure(figsize=(3, 2))
    figure.subplots().imshow(np.random.default_rng(0).random((8, 12, 3)))
    sink = FigureSink(tmp_path)
    path = sink.write("example", "eval/example", figure)
    sink.close()

    assert path == tmp_path / "figures" / "example.png" and sink.paths == [path]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    (image,) = events.Images("eval/example")
    assert image.encoded_image_string == path.read_bytes()
    with Image.open(path) as png:
        assert (image.width, image.height) == png.size
    assert np.asarray(Image.open(path)).shape[:2] == (image.height, image.width)
