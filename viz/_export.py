"""Export to mp4 (H.264 through ffmpeg) and GIF (Pillow).

Writers are found through a small registry keyed by file suffix, each with an
availability check that runs before anything is rendered. The file is written beside
its target under a temporary name and renamed when complete, so an error or Ctrl-C
leaves neither a half-written file nor the temporary one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from kmeans_gpu import _config

from ._render import ClusterAnimation, FrameSource, animate, check_frames

logger = logging.getLogger("viz")

FFMPEG_ENV = _config.FFMPEG
FFMPEG_HELP = (
    "no ffmpeg found to write .mp4: pip install 'kmeans-gpu[viz]' (imageio-ffmpeg ships "
    f"one), install ffmpeg with your package manager, or set {FFMPEG_ENV}=/path/to/ffmpeg; "
    "or save a .gif instead"
)


class WriterUnavailableError(RuntimeError):
    """No program or library to write this format here; the message says how to get one."""


def _executable(path: str) -> str | None:
    found = shutil.which(path)
    return found if found and os.access(found, os.X_OK) else None


def find_ffmpeg(explicit: str | os.PathLike[str] | None = None) -> str:
    """The ffmpeg to use: the ``explicit`` argument, then ``$KMEANS_GPU_FFMPEG``, then
    matplotlib's ``animation.ffmpeg_path``, then ``ffmpeg`` on ``PATH``, then the binary
    ``imageio-ffmpeg`` ships.

    Raises
    ------
    WriterUnavailableError
        When a path given explicitly or in the environment is not an executable, or
        when none of the places has one.
    """
    for origin, value in (("ffmpeg argument", explicit), (FFMPEG_ENV, _config.ffmpeg_path())):
        if value:
            found = _executable(os.fspath(value))
            if found is None:
                raise WriterUnavailableError(f"{origin} {os.fspath(value)!r} is not an executable")
            return found
    import matplotlib as mpl

    configured = mpl.rcParams["animation.ffmpeg_path"]
    for candidate in (configured, "ffmpeg"):
        found = _executable(candidate)
        if found:
            return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise WriterUnavailableError(FFMPEG_HELP) from None


@dataclass(frozen=True)
class WriterSpec:
    """How to write one format: ``check`` (before rendering) finds what the writer needs
    and returns the matplotlib settings to write with; ``make`` builds the writer."""

    name: str
    check: Callable[[Any], dict[str, Any]]
    make: Callable[[int], Any]


def _mp4_check(ffmpeg: Any) -> dict[str, Any]:
    return {"animation.ffmpeg_path": find_ffmpeg(ffmpeg)}


def _mp4_writer(fps: int) -> Any:
    from matplotlib.animation import FFMpegWriter

    return FFMpegWriter(fps=fps, codec="h264", extra_args=["-pix_fmt", "yuv420p"])


def _gif_check(ffmpeg: Any) -> dict[str, Any]:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise WriterUnavailableError(
            "Pillow is needed to write .gif: pip install 'kmeans-gpu[viz]'"
        ) from None
    return {}


def _gif_writer(fps: int) -> Any:
    from matplotlib.animation import PillowWriter

    return PillowWriter(fps=fps)


WRITERS: dict[str, WriterSpec] = {
    ".mp4": WriterSpec("H.264 mp4 (ffmpeg)", _mp4_check, _mp4_writer),
    ".gif": WriterSpec("GIF (Pillow)", _gif_check, _gif_writer),
}


def default_filename(now: datetime | None = None, number: int = 0) -> str:
    """The blog post's timestamped name, zero-padded: ``YYYYMMDDHHMMSS_KMeans2D.mp4``,
    or ``YYYYMMDDHHMMSS_KMeans2D_<number>.mp4`` for a ``number`` above 0."""
    suffix = f"_{number}" if number else ""
    return f"{(now or datetime.now()):%Y%m%d%H%M%S}_KMeans2D{suffix}.mp4"


def reserve_default_path(
    directory: str | os.PathLike[str] = ".", now: datetime | None = None
) -> Path:
    """Create, empty, the first free one of ``default_filename(now)``, then ``_1``,
    ``_2``, … in ``directory``, and return its path.

    The name is taken with an exclusive create (``O_EXCL``), so two saves in the same
    second, in this process or another, never get the same file. :func:`save` renames
    the finished file over it.
    """
    stamp = now or datetime.now()
    number = 0
    while True:
        path = Path(directory, default_filename(stamp, number))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            number += 1
            continue
        os.close(fd)
        return path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` (same suffix) that becomes ``target`` only when
    the block completes; on any error or interrupt it is removed."""
    fd, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}.", suffix=f".partial{target.suffix}"
    )
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _ffmpeg_failure(exc: subprocess.CalledProcessError) -> str:
    output = exc.stderr or exc.output or ""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    program = exc.cmd[0] if isinstance(exc.cmd, (list, tuple)) and exc.cmd else exc.cmd
    detail = f": {lines[-1]}" if lines else ""
    return f"ffmpeg ({program}) failed with exit status {exc.returncode}{detail}"


@dataclass(frozen=True)
class Saved:
    """What :func:`save` wrote."""

    path: Path
    n_frames: int


def _progress_bar(total: int, enabled: bool | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return contextlib.nullcontext(None)
    try:
        from tqdm import tqdm
    except ImportError:
        return contextlib.nullcontext(None)
    return tqdm(total=total, unit="frame", desc="rendering", leave=False)


def _wants_default_name(path: str | os.PathLike[str] | None) -> bool:
    return not path or Path(path).is_dir()


def check_target(
    path: str | os.PathLike[str] | None, ffmpeg: str | os.PathLike[str] | None = None
) -> tuple[Path, WriterSpec, dict[str, Any]]:
    """Check, before anything is computed or rendered, that ``path`` can be written:
    a known suffix, an existing directory, and the format's writer installed.

    Returns the path, the writer and its settings. For None (or an existing directory)
    the path is the default name in the current directory (or that one); :func:`save`
    then takes the first free one of it, ``_1``, ``_2``, ….
    """
    if _wants_default_name(path):
        target = Path(path or ".", default_filename())
    else:
        target = Path(cast(Any, path))
    spec = WRITERS.get(target.suffix.lower())
    if spec is None:
        raise ValueError(
            f"cannot tell the format of {os.fspath(target)!r}: use a name ending in "
            f"{' or '.join(WRITERS)}"
        )
    if not target.parent.is_dir():
        raise ValueError(f"directory {os.fspath(target.parent)!r} does not exist")
    return target, spec, spec.check(ffmpeg)


def save(
    animation: ClusterAnimation | FrameSource,
    path: str | os.PathLike[str] | None = None,
    *,
    fps: int = 1,
    dpi: int = 100,
    progress: bool | None = None,
    ffmpeg: str | os.PathLike[str] | None = None,
    points: Any = None,
    **animate_options: Any,
) -> Saved:
    """Write an animation to ``.mp4`` (H.264 through ffmpeg) or ``.gif`` (Pillow).

    Parameters
    ----------
    animation : ClusterAnimation, or frames (a list or a generator function)
        What :func:`viz.animate` returned, or the frames themselves (then ``points`` is
        required). A generator function is run once to a list.
    path : path, default=None
        The format follows the suffix. None, or an existing directory, is
        ``YYYYMMDDHHMMSS_KMeans2D.mp4`` in the current directory (or that one), with
        ``_1``, ``_2``, … added when the name is taken (see :func:`reserve_default_path`).
    fps : int, default=1
        Frames per second of the file.
    dpi : int, default=100
        Resolution: the frames are rcParams' ``figure.figsize`` times ``dpi`` pixels.
    progress : bool, default=None
        A progress bar (tqdm) while frames render; None shows it on a terminal only.
    ffmpeg : path, default=None
        The ffmpeg to use (see :func:`find_ffmpeg` for where else it is looked for).
    points, **animate_options
        Passed to :func:`viz.animate` when ``animation`` is frames.

    Returns
    -------
    Saved
        The path written and the number of frames in it.

    Raises
    ------
    ValueError
        For an unknown suffix or a missing directory, before anything is rendered.
    WriterUnavailableError
        When the format's writer is missing, before anything is rendered.
    RuntimeError
        When ffmpeg fails (the message has its exit status and last line of output).
    """
    target, spec, rc = check_target(path, ffmpeg)
    if _wants_default_name(path):
        target = reserve_default_path(target.parent)
        try:
            return _render(
                animation, target, spec, rc, fps, dpi, progress, points, animate_options
            )
        except BaseException:
            target.unlink(missing_ok=True)  # the empty file that held the name
            raise
    return _render(animation, target, spec, rc, fps, dpi, progress, points, animate_options)


def _render(
    animation: ClusterAnimation | FrameSource,
    target: Path,
    spec: WriterSpec,
    rc: dict[str, Any],
    fps: int,
    dpi: int,
    progress: bool | None,
    points: Any,
    animate_options: dict[str, Any],
) -> Saved:
    if isinstance(animation, ClusterAnimation):
        source, points = animation.frames_source, animation.scene
        animate_options = {**animation.options, **animate_options}
    else:
        source = check_frames(animation)
        if points is None:
            raise ValueError("points are needed to render frames")
    frames = list(source()) if callable(source) else list(source)
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # an Agg figure outside pyplot: saving from a live window opens no second window
    fig = Figure()
    FigureCanvasAgg(fig)
    rendered = animate(
        frames, points, ax=fig.subplots(), repeat=False, blit=False, **animate_options
    )
    writer = spec.make(fps)
    try:
        with _progress_bar(len(frames), progress) as bar, atomic_path(target) as temporary:
            with mpl.rc_context(cast(Any, rc)):
                rendered.save(
                    temporary,
                    writer=writer,
                    dpi=dpi,
                    progress_callback=None if bar is None else (lambda i, n: bar.update(1)),
                )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(_ffmpeg_failure(exc)) from exc
    finally:
        # a save that failed before its first frame leaves no "Animation was deleted
        # without rendering anything" warning after the one-line error
        cast(Any, rendered)._draw_was_started = True
    logger.info("wrote %d frames to %s", len(frames), target)
    return Saved(target, len(frames))
