"""Where figures go: a PNG in the run folder's figures/ and the same pixels in TensorBoard."""

from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from finetune.io import save_figure

FIGURES = "figures"


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
