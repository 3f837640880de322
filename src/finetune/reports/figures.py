"""Where figures go (a PNG in the run folder's figures/ and the same pixels in TensorBoard), and
the tick labels the figures of the package share."""

from pathlib import Path

from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, Locator, LogLocator, MaxNLocator, NullFormatter
from PIL import Image

from finetune.io import save_figure

FIGURES = "figures"


class PlainLogLocator(Locator):
    """Ticks of a log-scaled axis that a person reads: within one decade, plain steps (1, 1.25,
    1.5, 1.75), where matplotlib's log ticks would leave a loss of 0.8-1.8 with 0.8, 0.9 and 1
    labelled and nothing near 1.75; over two or three decades 1, 2 and 5 of each (0.05, 0.1,
    0.2, ...); over more, the decades."""

    def __init__(self) -> None:
        self.steps = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
        self.one_two_five = LogLocator(subs=(1.0, 2.0, 5.0))
        self.log = LogLocator()

    def set_axis(self, axis: Axis) -> None:
        super().set_axis(axis)
        for locator in (self.steps, self.one_two_five, self.log):
            locator.set_axis(axis)

    def __call__(self) -> list[float]:
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        low, high = sorted((vmin, vmax))
        if low > 0 and high / low < 10:
            return [tick for tick in self.steps.tick_values(low, high) if tick > 0]
        if low > 0 and high / low < 1000:
            return list(self.one_two_five.tick_values(low, high))
        return list(self.log.tick_values(low, high))

    def nonsingular(self, vmin: float, vmax: float) -> tuple[float, float]:
        return self.log.nonsingular(vmin, vmax)

    def view_limits(self, vmin: float, vmax: float) -> tuple[float, float]:
        return self.log.view_limits(vmin, vmax)


def plain_log_axis(axis: Axis) -> None:
    """Plain numbers (0.3, 1.75, 10000; not 3 x 10^-1) at readable ticks of a log-scaled axis
    (PlainLogLocator): a loss read off a curve is a plain number. Minor ticks stay unlabelled."""
    axis.set_major_locator(PlainLogLocator())
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


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
