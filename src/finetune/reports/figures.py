"""Where figures go (a PNG in the run folder's figures/ and the same pixels in TensorBoard), and
the tick labels the figures of the package share."""

from pathlib import Path

from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter
from PIL import Image

from finetune.io import save_figure

FIGURES = "figures"


class PlainLogFormatter(LogFormatter):
    """Labels the ticks matplotlib's LogFormatter labels, as plain numbers: 0.3, 1.75 and 10000,
    not 3 x 10^-1, 1.75 x 10^0 and 10^4 (a loss read off a curve is a plain number)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_log_axis(axis: Axis) -> None:
    """Plain numbers on a log-scaled axis, at the decades and, where they fit, between them
    (a loss that stays within one decade gets labels too)."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


class FigureSink:
    """Writes each figure as <run_dir>/figures/<name>.png and under `tag` in TensorBoard.

    The figure is rendered and encoded once: TensorBoard receives the bytes of the PNG just
    written (an image summary holds an encoded image), not pixels to decode and encode again.
    """

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(run_dir) / FIGURES
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        self.paths: list[Path] = []

    def write(self, name: str, tag: str, figure: Figure) -> Path:
        from tensorboard.compat.proto.summary_pb2 import Summary

        path = save_figure(self.folder / f"{name}.png", figure)
        with Image.open(path) as png:  # reads the header only
            width, height = png.size
            channels = len(png.getbands())
        image = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=path.read_bytes()
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        self.writer.file_writer.add_summary(summary, global_step=0)
        self.paths.append(path)
        return path

    def close(self) -> None:
        self.writer.close()
