"""Where figures go: a PNG in the run folder's figures/ and the same pixels in TensorBoard."""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from finetune.io import save_figure

FIGURES = "figures"


class FigureSink:
    """Writes each figure as <run_dir>/figures/<name>.png and under `tag` in TensorBoard.

    The figure is rendered once: TensorBoard receives the pixels of the PNG just written.
    """

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(run_dir) / FIGURES
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        self.paths: list[Path] = []

    def write(self, name: str, tag: str, figure: Figure) -> Path:
        path = save_figure(self.folder / f"{name}.png", figure)
        with Image.open(path) as png:
            pixels = np.asarray(png.convert("RGB"))
        self.writer.add_image(tag, pixels, global_step=0, dataformats="HWC")
        self.paths.append(path)
        return path

    def close(self) -> None:
        self.writer.close()
