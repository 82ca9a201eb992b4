"""Export to mp4 (H.264 through ffmpeg) and GIF (Pillow).

Writers are found through a small registry keyed by file suffix, each with an
availability check that runs before anything is rendered. The file is written beside
its target under a temporary name and renamed when complete, so an error or Ctrl-C
leaves neither a half-written file nor the temporary one.

ffmpeg runs in a process group of its own, so Ctrl-C at a terminal reaches Python
alone, which stops ffmpeg (the group) and removes the temporary file. ffmpeg is bounded
in time: when it takes no frame for ``timeout`` seconds, or has not finished that long
after the last one, it is stopped and the save fails with one line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

import matplotlib as mpl
from matplotlib.animation import FFMpegWriter

from kmeans_gpu import _config

from ._render import ClusterAnimation, FrameSource, animate, check_frames

logger = logging.getLogger("viz")

FFMPEG_ENV = _config.FFMPEG
FFMPEG_HELP = (
    "no ffmpeg found to write .mp4: pip install 'kmeans-gpu[viz]' (imageio-ffmpeg ships "
    f"one), install ffmpeg with your package manager, or set {FFMPEG_ENV}=/path/to/ffmpeg; "
    "or save a .gif instead"
)


#: seconds ffmpeg may take to accept one frame, or to finish after the last one
FFMPEG_TIMEOUT = 60.0


class WriterUnavailableError(RuntimeError):
    """No program or library to write this format here; the message says how to get one."""


class FFmpegError(RuntimeError):
    """ffmpeg failed, hung (and was stopped) or wrote no mp4; the message is one line."""


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
    and returns the matplotlib settings to write with; ``make(fps, timeout)`` builds the
    writer."""

    name: str
    check: Callable[[Any], dict[str, Any]]
    make: Callable[[int, float], Any]


def _mp4_check(ffmpeg: Any) -> dict[str, Any]:
    return {"animation.ffmpeg_path": find_ffmpeg(ffmpeg)}


class BoundedFFMpegWriter(FFMpegWriter):
    """matplotlib's pipe writer to ffmpeg, bounded in time and stopped on any error.

    ffmpeg starts in its own process session (and group), its output goes to a
    temporary file (it can never block on a full pipe), and a watchdog stops the group
    when a frame is not taken within ``timeout`` seconds; the end waits at most as long.
    Any error or interrupt while frames are written stops ffmpeg before it propagates.
    A failure of ffmpeg itself (an exit status, a hang, a file that is no mp4) is an
    :class:`FFmpegError` with one line.
    """

    _proc: subprocess.Popen[bytes]

    def __init__(self, fps: int, *, timeout: float = FFMPEG_TIMEOUT) -> None:
        super().__init__(fps=fps, codec="h264", extra_args=["-pix_fmt", "yuv420p"])
        self.timeout = timeout
        self._errors: IO[bytes] | None = None
        self._hung: str | None = None

    @contextlib.contextmanager
    def saving(self, fig: Any, outfile: Any, dpi: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Start ffmpeg, yield for the frames, then finish; on any exception (Ctrl-C
        included) stop ffmpeg first, and say why when ffmpeg was the cause."""
        with mpl.rc_context({"savefig.bbox": None}):
            try:
                self.setup(fig, outfile, dpi, *args, **kwargs)
            except BaseException:
                self._close_errors()
                raise
            try:
                yield self
            except BaseException as exc:
                status = self._stop()
                failure = self._failure(status, during_frames=True)
                self._close_errors()
                if failure is not None and not isinstance(exc, KeyboardInterrupt):
                    raise FFmpegError(failure) from exc
                raise
            try:
                self.finish()
            finally:
                self._close_errors()

    def _run(self) -> None:
        command = cast(Any, self)._args()
        logger.info("running %s", subprocess.list2cmdline(command))
        self._errors = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._errors,
                start_new_session=hasattr(os, "killpg"),
            )
        except OSError as exc:  # not a program this system can run
            raise FFmpegError(f"cannot run ffmpeg ({command[0]}): {exc.strerror}") from exc

    def grab_frame(self, **savefig_kwargs: Any) -> None:
        hung = f"took no frame for {self.timeout:g} s"
        watchdog = threading.Timer(self.timeout, self._expire, args=(hung,))
        watchdog.daemon = True
        watchdog.start()
        try:
            super().grab_frame(**savefig_kwargs)
        finally:
            watchdog.cancel()

    def finish(self) -> None:
        """Close ffmpeg's input and wait for it (``timeout`` seconds at most); check its
        exit status and that it wrote an mp4."""
        with contextlib.suppress(BrokenPipeError):  # ffmpeg gone: its status says why
            self._input().close()
        try:
            self._proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._expire(f"had not finished {self.timeout:g} s after the last frame")
        status = self._proc.wait()
        failure = self._failure(status, during_frames=False)
        if failure is not None:
            raise FFmpegError(failure)
        with open(self.outfile, "rb") as written:
            head = written.read(8)
        if head[4:8] != b"ftyp":  # the first box of every mp4 ffmpeg writes
            raise FFmpegError(
                f"ffmpeg ({self._program()}) exited normally but did not write an mp4 "
                f"({os.path.getsize(self.outfile)} bytes that are not one)"
            )

    def _input(self) -> IO[bytes]:
        assert self._proc.stdin is not None
        return self._proc.stdin

    def _program(self) -> str:
        return str(cast(Any, self._proc.args)[0])

    def _expire(self, hung: str) -> None:
        """The watchdog: ffmpeg ``hung``; stop it (a blocked write then fails)."""
        self._hung = hung
        self._kill()

    def _kill(self) -> None:
        """SIGKILL to ffmpeg's process group: ffmpeg and anything it started."""
        try:
            if hasattr(os, "killpg"):
                os.killpg(self._proc.pid, signal.SIGKILL)
            elif self._proc.poll() is None:
                self._proc.kill()
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    def _stop(self) -> int | None:
        """Stop ffmpeg; returns its exit status if it had ended by itself, else None."""
        status = self._proc.poll()
        self._kill()
        with contextlib.suppress(OSError):
            self._input().close()
        self._proc.wait()
        return status

    def _failure(self, status: int | None, *, during_frames: bool) -> str | None:
        """What went wrong with ffmpeg, in one line, or None when nothing did."""
        program = self._program()
        if self._hung is not None:
            return f"ffmpeg ({program}) {self._hung}: stopped it"
        if status is None or (status == 0 and not during_frames):
            return None
        detail = self._last_error_line()
        detail = f": {detail}" if detail else ""
        if status == 0:
            return f"ffmpeg ({program}) exited before it took every frame{detail}"
        if status < 0:
            return f"ffmpeg ({program}) was killed by signal {-status}{detail}"
        return f"ffmpeg ({program}) failed with exit status {status}{detail}"

    def _last_error_line(self) -> str:
        if self._errors is None:
            return ""
        self._errors.seek(max(0, self._errors.seek(0, os.SEEK_END) - 8192))
        text = self._errors.read().decode(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " ".join(lines[-1].split())[:300] if lines else ""

    def _close_errors(self) -> None:
        if self._errors is not None:
            self._errors.close()
            self._errors = None


def _mp4_writer(fps: int, timeout: float) -> Any:
    return BoundedFFMpegWriter(fps, timeout=timeout)


def _gif_check(ffmpeg: Any) -> dict[str, Any]:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise WriterUnavailableError(
            "Pillow is needed to write .gif: pip install 'kmeans-gpu[viz]'"
        ) from None
    return {}


def _gif_writer(fps: int, timeout: float) -> Any:
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


@dataclass(frozen=True)
class Saved:
    """What :func:`save` wrote."""

    path: Path
    n_frames: int

    @property
    def message(self) -> str:
        """``Saved N frames to PATH``: what the command, the window and the menu say."""
        return f"Saved {self.n_frames} frames to {self.path}"


def check_positive(value: Any, name: str, *, integer: bool = False) -> Any:
    """``value`` if it is a positive finite number (an integer with ``integer``), else
    a ValueError that names ``name``."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    valid = isinstance(value, kinds) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or value <= 0:
        kind = "integer" if integer else "number"
        raise ValueError(f"{name} must be a positive {kind}, got {value!r}")
    return value


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
    dpi: float = 100,
    progress: bool | None = None,
    ffmpeg: str | os.PathLike[str] | None = None,
    timeout: float = FFMPEG_TIMEOUT,
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
        Frames per second of the file (a positive integer).
    dpi : float, default=100
        Resolution: the frames are rcParams' ``figure.figsize`` times ``dpi`` pixels.
    progress : bool, default=None
        A progress bar (tqdm) while frames render; None shows it on a terminal only.
    ffmpeg : path, default=None
        The ffmpeg to use (see :func:`find_ffmpeg` for where else it is looked for).
    timeout : float, default=60
        Seconds ffmpeg may take to accept a frame, or to finish after the last one,
        before it is stopped and the save fails.
    points, **animate_options
        Passed to :func:`viz.animate` when ``animation`` is frames (``palette``,
        ``title``, ``trails``, ``inertia_inset``).

    Returns
    -------
    Saved
        The path written and the number of frames in it.

    Raises
    ------
    ValueError
        For an unknown suffix, a missing directory or a bad ``fps``, ``dpi`` or
        ``timeout``, before anything is rendered.
    WriterUnavailableError
        When the format's writer is missing, before anything is rendered.
    FFmpegError
        When ffmpeg fails (the message has its exit status and last line of output),
        hangs (it is stopped after ``timeout`` seconds) or writes no mp4.
    OSError
        When the file cannot be written (a full disk, no permission).
    KeyboardInterrupt
        On Ctrl-C; ffmpeg is stopped and nothing is left behind.
    """
    check_positive(fps, "fps", integer=True)
    check_positive(dpi, "dpi")
    check_positive(timeout, "timeout")
    target, spec, rc = check_target(path, ffmpeg)
    writer = spec.make(fps, timeout)
    if not _wants_default_name(path):
        return _render(animation, target, writer, rc, dpi, progress, points, animate_options)
    target = reserve_default_path(target.parent)
    try:
        return _render(animation, target, writer, rc, dpi, progress, points, animate_options)
    except BaseException:
        target.unlink(missing_ok=True)  # the empty file that held the name
        raise


def _render(
    animation: ClusterAnimation | FrameSource,
    target: Path,
    writer: Any,
    rc: dict[str, Any],
    dpi: float,
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # an Agg figure outside pyplot: saving from a live window opens no second window
    fig = Figure()
    FigureCanvasAgg(fig)
    rendered = animate(
        frames, points, ax=fig.subplots(), repeat=False, blit=False, **animate_options
    )
    try:
        with _progress_bar(len(frames), progress) as bar, atomic_path(target) as temporary:
            with mpl.rc_context(cast(Any, rc)):
                rendered.save(
                    temporary,
                    writer=writer,
                    dpi=dpi,
                    progress_callback=None if bar is None else (lambda i, n: bar.update(1)),
                )
    finally:
        # a save that failed before its first frame leaves no "Animation was deleted
        # without rendering anything" warning after the one-line error
        cast(Any, rendered)._draw_was_started = True
    logger.info("wrote %d frames to %s", len(frames), target)
    return Saved(target, len(frames))
