"""The ``kmeans-gpu`` command (also ``python -m kmeans_gpu``).

``animate`` renders the blog post's scene (or a data file), live or to a file; ``fit``
clusters a data file; ``demo`` prints a clustering of the blog post's scene; ``bench``
runs the benchmark harness of a source checkout.

Exit codes: 0 done; 2 a usage error (bad arguments, input files or values), one line;
1 a failure while working (ffmpeg failed or hung, a full disk, a writer missing), one
line, or an internal error (a bug), with its traceback; 130 Ctrl-C (SIGINT), 143
SIGTERM and 129 SIGHUP, one line each, after the same clean-up as Ctrl-C.

Every file is written beside its target under a temporary name and renamed over it when
complete (a symlink of that name is replaced, never followed); a failure or a signal
leaves the target as it was and no temporary file.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

#: exit codes: a failure while working (a save ffmpeg could not finish, a full disk, a
#: writer missing), and internal errors (bugs, reported with their traceback)
EXIT_FAILURE = 1
#: bad arguments, bad input files, bad values typed
EXIT_USAGE = 2
#: Ctrl-C (SIGINT); SIGTERM and SIGHUP exit with 128 + their number (143 and 129)
EXIT_INTERRUPTED = 130
RUNTIME_FAILURES = (OSError, RuntimeError, MemoryError, subprocess.SubprocessError)
#: signals that end the command as Ctrl-C does (clean-up included), where they exist
TERMINATING_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: seconds a long step runs before its progress bar shows (on a terminal)
PROGRESS_DELAY_S = 1.0
SEED_MAX = 2**32 - 1

logger = logging.getLogger("kmeans_gpu.cli")
T = TypeVar("T")


class CommandError(Exception):
    """A usage problem (arguments, input files, values) to report in one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# -- argument types: each names what it wants; argparse adds the option's name ----------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _n_init(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a positive integer, got {text!r}"
        ) from None


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {SEED_MAX}], got {text!r}")
    return value


def _number(text: str, *, positive: bool) -> float:
    want = "a positive number" if positive else "a number >= 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
    return value


def _positive_number(text: str) -> float:
    return _number(text, positive=True)


def _non_negative_number(text: str) -> float:
    return _number(text, positive=False)


def _finite_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


# -- data files --------------------------------------------------------------------------

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def load_points(path: str | os.PathLike[str]) -> Any:
    """A 2-D array of finite numbers from a ``.npy`` file (read without pickle) or a
    ``.csv`` file (comma-separated numbers, UTF-8 with or without a byte-order mark,
    and one optional header line); a dask array from a ``.zarr`` store or a folder of
    numbered ``.npy`` files (needs ``kmeans-gpu[dask]``).

    Raises
    ------
    CommandError
        With one line that names the file (and the line of a CSV file) for anything
        that is not such an array: a missing or empty file, an ``.npz`` archive or a
        pickle named ``.npy``, a truncated file, a row that is not numbers, a missing
        or infinite value, the wrong number of dimensions.
    """
    file = Path(path)
    if not file.exists():
        raise CommandError(f"no such data file: {os.fspath(file)}")
    if file.is_dir() and (file.suffix.lower() == ".zarr" or any(file.glob("*.npy"))):
        return _load_stack(file)
    if not file.is_file():
        raise CommandError(f"{os.fspath(file)}: not a file")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        data = _load_npy(file)
    elif suffix == ".csv":
        data = _load_csv(file)
    else:
        raise CommandError(f"{file.name}: data files must be .npy or .csv")
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise CommandError(
            f"{file.name}: expected a 2-D array of shape (n_points, n_features), got "
            f"shape {data.shape}"
        )
    if data.dtype.kind not in "biuf":
        raise CommandError(f"{file.name}: expected numbers, got dtype {data.dtype}")
    if data.dtype.kind == "f":
        _check_finite(file.name, data)
    return data


def _load_stack(folder: Path) -> Any:
    try:
        from ._dask import load_stack
    except ImportError as exc:
        raise CommandError(
            f"{folder.name}: a folder of data needs Dask: pip install 'kmeans-gpu[dask]' ({exc})"
        ) from None
    try:
        data = load_stack(folder)
    except (ImportError, ValueError, OSError) as exc:
        raise CommandError(f"{folder.name}: cannot read it: {exc}") from None
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise CommandError(
            f"{folder.name}: expected a 2-D array of shape (n_points, n_features), got "
            f"shape {data.shape}"
        )
    return data


def _load_npy(file: Path) -> np.ndarray:
    with open(file, "rb") as stream:
        head = stream.read(len(NPY_MAGIC))
    if not head:
        raise CommandError(f"{file.name}: the file is empty")
    if head.startswith(ZIP_MAGIC):
        raise CommandError(
            f"{file.name}: this is an .npz archive (several arrays), not an .npy file; "
            "save the one array to cluster with numpy.save"
        )
    if head != NPY_MAGIC:
        raise CommandError(f"{file.name}: not an .npy file (it lacks the .npy header)")
    try:
        data = np.load(file, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CommandError(
                f"{file.name}: holds Python objects (a pickled object array), not "
                "numbers; save a numeric array"
            ) from None
        raise CommandError(f"{file.name}: truncated or damaged .npy file ({exc})") from None
    except EOFError:
        raise CommandError(f"{file.name}: truncated .npy file") from None
    if data.ndim == 1:
        raise CommandError(
            f"{file.name}: expected a 2-D array of shape (n_points, n_features), got shape "
            f"{data.shape} (for one feature, save x.reshape(-1, 1))"
        )
    return data


def _is_blank(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _bad_field(field: str) -> str | None:
    """Why one CSV field is not a number, or None when it is one."""
    text = field.strip()
    if not text:
        return "an empty field"
    if "_" not in text:  # Python's float takes 1_000; numpy's parser does not
        try:
            float(text)
            return None
        except ValueError:
            pass
    hint = " (fields are separated by commas)" if any(c in text for c in ";\t ") else ""
    return f"{text[:40]!r} is not a number{hint}"


def _row_problem(line: str, width: int | None) -> str | None:
    fields = line.rstrip("\r\n").split(",")
    for field in fields:
        problem = _bad_field(field)
        if problem is not None:
            return problem
    if width is not None and len(fields) != width:
        return f"{len(fields)} fields where the rows before have {width}"
    return None


def _load_csv(file: Path) -> np.ndarray:
    """Read with NumPy's parser; a first line that is not numbers is a header when
    every later line is numbers; anything else is one line naming the line."""
    try:
        with open(file, encoding="utf-8-sig") as stream:
            first = next(
                ((number, line) for number, line in enumerate(stream, 1) if not _is_blank(line)),
                None,
            )
            if first is None:
                raise CommandError(f"{file.name}: no rows of numbers")
            first_number, first_line = first
            header = _row_problem(first_line, None) is not None
            stream.seek(0)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "input contained no data": said below
                    data = np.loadtxt(
                        stream,
                        delimiter=",",
                        ndmin=2,
                        skiprows=first_number if header else 0,
                        dtype=np.float64,
                    )
            except ValueError as exc:
                stream.seek(0)
                raise CommandError(_csv_problem(file.name, stream, header, exc)) from None
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"{file.name}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})"
        ) from None
    if data.shape[0] == 0:
        raise CommandError(f"{file.name}: no rows of numbers after the header line")
    return data


def _csv_problem(name: str, lines: Iterable[str], header: bool, exc: ValueError) -> str:
    """The first row (after the header line, if ``header``) that is not numbers like
    the rows before it, as ``NAME, line N: what``; the parser's message if none is.

    A header line followed by no row of numbers at all was no header: the first line
    is named then.
    """
    width = None
    first: tuple[int, str] | None = None
    for number, line in enumerate(lines, start=1):
        if _is_blank(line):
            continue
        if first is None:
            first = (number, line)
            if header:
                continue
        problem = _row_problem(line, width)
        if problem is not None:
            if header and width is None:
                number, problem = first[0], _row_problem(first[1], None)
            return f"{name}, line {number}: {problem}"
        width = width or len(line.split(","))
    return f"{name}: cannot read it: {' '.join(str(exc).split())}"


def _check_finite(name: str, data: np.ndarray) -> None:
    finite = np.isfinite(data)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise CommandError(
            f"{name}: row {row + 1}, column {column + 1} is {data[row, column]}; K-means "
            "needs finite numbers"
        )


def _as_dtype(points: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """``points`` in ``dtype``; data beyond float32's range is a usage error."""
    target = np.dtype(dtype)
    if target == np.float32 and points.size:
        largest = max(abs(float(points.max())), abs(float(points.min())))  # no |x| copy
        if largest > float(np.finfo(np.float32).max):
            raise CommandError(
                f"{name}: the data overflow float32 (max |x| = {largest:.6g}); use --dtype float64"
            )
    return points.astype(target, copy=False)


# -- writing files ----------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and the terminating signals wait until the block ends, so its renames
    happen all together or not at all; then each one's handler runs.

    Python runs signal handlers in the main thread, so the deferral is done there, by
    handler: masking the signal would not do, as any other thread may receive it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []

    def defer(signum: int, frame: Any) -> None:
        pending.append((signum, frame))

    previous = {}
    for number in (signal.SIGINT, *TERMINATING_SIGNALS):
        handler = signal.getsignal(number)
        if handler is not signal.SIG_IGN and handler is not None:
            previous[number] = signal.signal(number, defer)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for signum, frame in pending:
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            else:
                signal.raise_signal(signum)  # the default action


def write_arrays(arrays: dict[Path, np.ndarray]) -> None:
    """Write each array to its ``.npy`` path atomically.

    Each array goes to a temporary file beside its target (flushed to disk), and the
    temporary files are renamed over the targets once all are complete, with Ctrl-C and
    SIGTERM deferred during the renames. A symlink at a target is replaced, never followed.
    On any error or interrupt the targets are left as they were and the temporary files
    are removed.
    """
    temporaries: list[tuple[Path, Path]] = []
    try:
        for target, array in arrays.items():
            fd, name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.stem}.", suffix=".partial.npy"
            )
            temporaries.append((Path(name), target))
            try:
                with os.fdopen(fd, "wb") as stream:
                    np.save(stream, array, allow_pickle=False)
                    stream.flush()
                    os.fsync(stream.fileno())
            except OSError as exc:
                raise _write_error(exc, target, array.nbytes) from exc
            os.chmod(name, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
        with _signals_deferred():
            for temporary, target in temporaries:
                os.replace(temporary, target)
    finally:
        for temporary, _ in temporaries:
            temporary.unlink(missing_ok=True)


def _write_error(exc: OSError, target: Path, size: int) -> OSError:
    """``exc`` as one line naming ``target``; NumPy's short write (``ndarray.tofile``)
    carries no errno, so a disk with less room than the array is named full."""
    code, reason = exc.errno, exc.strerror or str(exc)
    if code is None and shutil.disk_usage(target.parent).free < size:
        code, reason = errno.ENOSPC, os.strerror(errno.ENOSPC)
    message = f"cannot write {os.fspath(target)}: {reason}"
    return OSError(message) if code is None else OSError(code, message)


def _missing_directories(path: Path) -> list[Path]:
    """The directories ``mkdir -p path`` would create, outermost first; a usage error
    when something on the way is not a directory."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        if current.is_symlink():
            raise CommandError(f"--out {os.fspath(path)}: {os.fspath(current)} is a broken link")
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if not current.is_dir():
        raise CommandError(
            f"--out {os.fspath(path)}: {os.fspath(current)} exists and is not a directory"
        )
    if not os.access(current, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write in", os.fspath(current))
    return missing[::-1]


# -- progress ---------------------------------------------------------------------------


def _progress_bar(description: str, unit: str, total: int | None = None) -> Any:
    """A tqdm bar on stderr shown after :data:`PROGRESS_DELAY_S` seconds, when stderr is
    a terminal and tqdm is installed; else a null context."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    try:
        from tqdm import tqdm
    except ImportError:
        return contextlib.nullcontext(None)
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        delay=PROGRESS_DELAY_S,
        leave=False,
        file=sys.stderr,
    )


def _with_progress(items: Iterable[T], description: str, unit: str) -> Iterator[T]:
    with _progress_bar(description, unit) as bar:
        for item in items:
            if bar is not None:
                bar.update(1)
            yield item


class IterationProgress(logging.Filter):
    """Advances a progress bar on the solver's per-iteration log records.

    Installed on the ``kmeans_gpu`` logger while ``fit`` runs with ``verbose``: each
    ``iteration N: …`` record moves ``bar`` one step and each ``init R/RUNS: …`` record
    names the next run. Unless ``show`` (``-v``), those records then go no further.
    """

    def __init__(self, bar: Any, *, show: bool) -> None:
        super().__init__()
        self.bar = bar
        self.show = show
        self.iterations = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        values = record.args if isinstance(record.args, tuple) else ()
        if message.startswith("iteration "):
            self.iterations += 1
            if self.bar is not None:
                self.bar.update(1)
                if len(values) > 2:
                    self.bar.set_postfix_str(f"centre shift {values[2]:.3g}", refresh=False)
        elif message.startswith("init "):
            if self.bar is not None and len(values) > 1:
                done, runs = int(values[0]), int(values[1])  # type: ignore[call-overload]
                if done < runs:
                    self.bar.set_description_str(f"fitting (run {done + 1}/{runs})", refresh=False)
                    self.bar.set_postfix_str("", refresh=False)
        else:
            return True
        return self.show


def _quiet_unless(verbose: bool) -> contextlib.AbstractContextManager[Any]:
    """The solver's progress lines (scikit-learn's, on standard output) only with
    ``-v``; a progress bar counts its records otherwise."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


@contextlib.contextmanager
def _fit_progress(verbose: bool, runs: int) -> Iterator[bool]:
    """Whether to run the solver with ``verbose``: for ``-v`` (its records logged) or
    for a progress bar on a terminal (its records counted, not logged)."""
    description = f"fitting (run 1/{runs})" if runs > 1 else "fitting"
    bar_context = contextlib.nullcontext(None) if verbose else _progress_bar(description, "it")
    with bar_context as bar:
        if bar is None and not verbose:
            yield False
            return
        solver = logging.getLogger("kmeans_gpu")
        progress = IterationProgress(bar, show=verbose)
        level = solver.level
        solver.addFilter(progress)
        if solver.getEffectiveLevel() > logging.INFO:
            solver.setLevel(logging.INFO)
        try:
            yield True
        finally:
            solver.removeFilter(progress)
            solver.setLevel(level)


# -- the commands -----------------------------------------------------------------------


def _add_scene_options(parser: argparse.ArgumentParser, *, data: bool) -> None:
    scene = parser.add_argument_group("the scene (the blog post's, unless --data is given)")
    scene.add_argument("--k", type=_positive_int, default=12, help="clusters to find (default 12)")
    scene.add_argument(
        "--clusters", type=_positive_int, default=12, help="clusters to generate (default 12)"
    )
    scene.add_argument(
        "--points-per-cluster",
        type=_positive_int,
        default=100,
        help="points in each generated cluster (default 100)",
    )
    scene.add_argument(
        "--variance",
        type=_non_negative_number,
        default=0.01,
        help="spread of each cluster, times the bounds' span (default 0.01)",
    )
    scene.add_argument(
        "--bounds",
        type=_finite_number,
        nargs=2,
        default=(-4.0, 4.0),
        metavar=("LOW", "HIGH"),
        help="range of the cluster centres in x and y (default -4 4)",
    )
    if data:
        scene.add_argument(
            "--data",
            metavar="FILE",
            help="cluster this .npy or .csv file (or, with Dask, a .zarr store or a folder "
            "of numbered .npy files)",
        )
    scene.add_argument("--seed", type=_seed, default=None, help="random seed (default: random)")
    scene.add_argument(
        "--init",
        choices=("random", "k-means++"),
        default="random",
        help="random distinct points, as the blog post (default), or k-means++",
    )
    scene.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "numpy", "cupy"),
        help="where to compute (default auto: CuPy if a GPU is present)",
    )


def _check_scene_options(args: argparse.Namespace) -> None:
    """Values argparse cannot check alone, before anything is computed."""
    low, high = args.bounds
    if not low < high:
        raise CommandError(f"--bounds: LOW must be below HIGH, got {low:g} {high:g}")
    if not getattr(args, "data", None):
        _check_k(args.k, args.clusters * args.points_per_cluster, "generated points")


def _check_k(k: int, n_points: int, what: str) -> None:
    if k > n_points:
        raise CommandError(f"--k {k} is more than the {n_points:,} {what}")


def _scene(args: argparse.Namespace, rng: np.random.RandomState) -> np.ndarray:
    from . import generate_clusters

    if getattr(args, "data", None):
        points = load_points(args.data)
        _check_k(args.k, points.shape[0], f"points in {Path(args.data).name}")
        return points
    low, high = args.bounds
    return generate_clusters(
        args.clusters,
        args.points_per_cluster,
        args.variance,
        ((low, high), (low, high)),
        random_state=rng,
    )


def _start(args: argparse.Namespace, points: Any, rng: np.random.RandomState, backend: Any) -> Any:
    from . import initialize_centroids, kmeans_plusplus

    if args.init == "random":
        return initialize_centroids(args.k, points, random_state=rng)
    from ._sharded import is_dask_array

    if is_dask_array(points):  # k-means‖, what init="k-means++" means on Dask
        from . import kmeans_parallel

        return kmeans_parallel(points, args.k, random_state=rng, backend=backend)
    return kmeans_plusplus(points, args.k, random_state=rng, backend=backend)[0]


def _demo(args: argparse.Namespace) -> int:
    from . import get_backend, kmeans

    _check_scene_options(args)
    rng = np.random.RandomState(args.seed)
    points = _scene(args, rng)
    backend = get_backend(args.backend)
    start = _start(args, points, rng, backend)
    began = time.perf_counter()
    centers, labels, inertia, n_iter = kmeans(
        points, args.k, init=start, tol=0.0, max_iter=10_000, empty_cluster="keep", backend=backend
    )
    elapsed = time.perf_counter() - began
    sizes = np.bincount(backend.to_numpy(labels), minlength=args.k)
    out = sys.stdout
    out.write(
        f"clustered {points.shape[0]} points of the blog post's scene "
        f"({args.clusters} clusters x {args.points_per_cluster} points) into k={args.k}\n"
    )
    out.write(f"backend: {backend.name}\niterations: {n_iter}\ninertia: {inertia:.6g}\n")
    out.write(f"time: {elapsed * 1e3:.1f} ms\ncentres (x, y, points):\n")
    for (x, y), size in zip(backend.to_numpy(centers), sizes, strict=True):
        out.write(f"  {x:9.4f} {y:9.4f} {size:6d}\n")
    return 0


def has_display() -> bool:
    """Whether a window can be shown: a display server (on Linux and BSDs) and an
    interactive matplotlib backend."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")) and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    requested = os.environ.get("MPLBACKEND", "").lower()
    return requested not in ("agg", "pdf", "ps", "svg", "cairo", "template", "module://")


def _animate(args: argparse.Namespace) -> int:
    if args.save is None and not has_display():
        raise CommandError(
            "no display to show the animation on; render it to a file instead with "
            "--save [PATH] (.mp4 or .gif)"
        )
    try:
        import viz  # first: without matplotlib it says which extra to install
    except ImportError as exc:
        if exc.name not in (None, "matplotlib"):
            raise  # a module of ours or a required dependency: not the user's to fix
        raise CommandError(str(exc)) from None

    if args.save is not None:
        import matplotlib

        matplotlib.use("Agg")

    from . import get_backend, iter_frames
    from .display import make_scene

    _check_scene_options(args)
    rng = np.random.RandomState(args.seed)
    backend = get_backend(args.backend)
    if args.save is None:
        return _interactive(args, rng, backend)
    # before computing: a known suffix, an existing directory, the writer installed
    viz.check_target(args.save or None)
    points = _scene(args, rng)
    start = _start(args, points, rng, backend)
    scene = make_scene(points, max_points=args.max_points, random_state=rng, backend=backend)
    frames = list(
        _with_progress(
            iter_frames(
                points,
                start,
                max_iter=args.max_iter,
                backend=backend,
                display_indices=scene.indices,
            ),
            "clustering",
            "it",
        )
    )
    saved = viz.save(
        frames,
        args.save or None,  # None: a timestamped name, _1, _2, … when taken
        points=scene,
        fps=args.fps,
        dpi=args.dpi,
        timeout=args.ffmpeg_timeout,
        trails=args.trails,
        inertia_inset=args.inertia,
        palette=args.palette,
        title=viz.scene_title(
            args.k,
            points.shape[0],
            backend=backend.name,
            n_drawn=scene.points.shape[0],
            projection=scene.projection,
        ),
    )
    sys.stdout.write(f"{saved.message}\n")
    return 0


def _has_window(fig: Any) -> bool:
    """Whether matplotlib shows this figure in a window (it falls back to Agg, which
    cannot, when no GUI toolkit is installed)."""
    return fig.canvas.required_interactive_framework is not None


def _interactive(args: argparse.Namespace, rng: np.random.RandomState, backend: Any) -> int:
    import matplotlib.pyplot as plt

    import viz

    data = None
    if args.data:
        data = load_points(args.data)
        _check_k(args.k, data.shape[0], f"points in {Path(args.data).name}")
    fig = plt.figure(figsize=(8, 7))
    if not _has_window(fig):
        plt.close(fig)
        raise CommandError(
            f"matplotlib has no interactive backend here (it chose {plt.get_backend()!r}): "
            "install tkinter (e.g. the python3-tk package) or a Qt binding, or render to "
            "a file with --save [PATH]"
        )
    low, high = args.bounds
    where = f" of {Path(args.data).name}" if args.data else ""
    session = viz.InteractiveSession(
        k=args.k,
        data=data,
        scene={
            "num_clusters": args.clusters,
            "pts_per_cluster": args.points_per_cluster,
            "variance_coeff": args.variance,
            "bounds": ((low, high), (low, high)),
        },
        init=args.init,
        backend=backend,
        max_points=args.max_points,
        max_iter=args.max_iter,
        interval=args.interval,
        fps=args.fps,
        dpi=args.dpi,
        ffmpeg_timeout=args.ffmpeg_timeout,
        random_state=rng,
        trails=args.trails,
        inertia_inset=args.inertia,
        palette=args.palette,
        fig=fig,
        title=f"kmeans-gpu: K-means{where}, k = {args.k}",
    )
    session.run(menu=args.menu)
    return 0


def _fit(args: argparse.Namespace) -> int:
    from . import get_backend, kmeans

    out = Path(args.out)
    created = _missing_directories(out)  # checked before the work, created after it
    targets = {"centroids": out / "centroids.npy", "labels": out / "labels.npy"}
    for target in targets.values():
        if target.is_dir() and not target.is_symlink():
            raise CommandError(f"{os.fspath(target)} is a directory")
    began = time.perf_counter()
    points = load_points(args.data)
    name = Path(args.data).name
    logger.info(
        "read %s points x %s features (%s) from %s in %.2f s",
        f"{points.shape[0]:,}",
        points.shape[1],
        points.dtype,
        name,
        time.perf_counter() - began,
    )
    _check_k(args.k, points.shape[0], f"points in {name}")
    if args.dtype != "auto":
        points = _as_dtype(points, args.dtype, name)
    backend = get_backend(args.backend)
    runs = args.n_init if args.n_init != "auto" else (1 if args.init == "k-means++" else 10)
    began = time.perf_counter()
    with _fit_progress(args.verbose, runs) as verbose, _quiet_unless(args.verbose):
        centers, labels, inertia, n_iter = kmeans(
            points,
            args.k,
            init=args.init,
            n_init=args.n_init,
            max_iter=args.max_iter,
            tol=args.tol,
            random_state=args.seed,
            backend=backend,
            deterministic=args.deterministic,
            verbose=verbose,
        )
    elapsed = time.perf_counter() - began
    arrays = {
        targets["centroids"]: backend.to_numpy(centers),
        targets["labels"]: backend.to_numpy(labels),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_arrays(arrays)
    except BaseException:
        for directory in reversed(created):  # only the empty ones this command made
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    sys.stdout.write(
        f"points: {points.shape[0]} x {points.shape[1]}\nk: {args.k}\n"
        f"iterations: {n_iter}\ninertia: {inertia:.6g}\nbackend: {backend.name}\n"
        f"time: {elapsed:.3f} s\nSaved centroids to {targets['centroids']} and labels to "
        f"{targets['labels']}\n"
    )
    return 0


def _bench(options: Sequence[str]) -> int:
    """Run the benchmark harness of the source checkout in (or above) the current
    directory: it compares kmeans-gpu with its peers and is not part of the package."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "benchmarks" / "harness.py").is_file() and (folder / "kmeans_gpu").is_dir():
            sys.path.insert(0, os.fspath(folder))
            from benchmarks.harness import main as harness

            return int(harness(options))
    sys.stderr.write(
        "kmeans-gpu bench: error: the benchmark harness is the benchmarks/ folder of a "
        "source checkout; run this command inside a clone of the repository\n"
    )
    return EXIT_USAGE


def _add_verbose(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # below the command, SUPPRESS keeps a -v given before it
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="log progress (INFO) to stderr",
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="kmeans-gpu",
        description="K-means on CuPy (CUDA GPUs) or NumPy.",
        epilog="Exit codes: 0 done; 1 a failure while working (one line) or a bug (with its "
        "traceback); 2 a usage error (one line); 130 Ctrl-C; 143 SIGTERM; 129 SIGHUP.",
    )
    parser.add_argument("--version", action="version", version=f"kmeans-gpu {__version__}")
    _add_verbose(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    animate = commands.add_parser(
        "animate",
        help="animate K-means on the blog post's scene (or --data), live or to an mp4/gif",
        description="Animate Lloyd's K-means, as the blog post's animKMeans2D.py does: in "
        "a window with buttons and keys (1 new data, 2 new centroids, 3 save, 4 exit, "
        "space pause, n step), in the blog post's terminal menu (--menu), or rendered to "
        "a file (--save).",
    )
    _add_verbose(animate, top=False)
    _add_scene_options(animate, data=True)
    show = animate.add_argument_group("animation")
    show.add_argument(
        "--save",
        nargs="?",
        const="",
        metavar="PATH",
        help="render to PATH (.mp4 or .gif) without a window; PATH defaults to "
        "YYYYMMDDHHMMSS_KMeans2D.mp4 (_1, _2, ... when taken)",
    )
    show.add_argument(
        "--palette",
        choices=("hsv", "colorblind"),
        default="hsv",
        help="cluster colours: the blog post's hues (hsv, default) or Okabe-Ito's "
        "colour-blind-safe eight, with a new marker shape every 8 clusters (colorblind)",
    )
    show.add_argument(
        "--interval", type=_positive_int, default=500, help="ms between frames (500)"
    )
    show.add_argument(
        "--fps", type=_positive_int, default=1, help="frames per second when saved (1)"
    )
    show.add_argument("--dpi", type=_positive_int, default=100, help="resolution when saved (100)")
    show.add_argument(
        "--ffmpeg-timeout",
        type=_positive_number,
        default=60.0,
        metavar="SECONDS",
        help="stop ffmpeg (and fail) when it takes no frame, or does not finish after "
        "the last one, for this long (60)",
    )
    show.add_argument("--max-iter", type=_positive_int, default=300, help="iteration cap (300)")
    show.add_argument(
        "--max-points", type=_positive_int, default=100_000, help="most points drawn (100000)"
    )
    show.add_argument("--trails", action="store_true", help="draw each centroid's path")
    show.add_argument("--inertia", action="store_true", help="inset of inertia per iteration")
    show.add_argument("--menu", action="store_true", help="the blog post's terminal menu")
    animate.set_defaults(run=_animate)

    fit = commands.add_parser(
        "fit",
        help="cluster a .npy or .csv file; write centroids.npy and labels.npy",
        description="Cluster the rows of DATA and write centroids.npy and labels.npy into "
        "--out, each through a temporary file renamed when complete.",
    )
    _add_verbose(fit, top=False)
    fit.add_argument(
        "data",
        metavar="DATA",
        help="a .npy or .csv file of shape (n, d), or a .zarr store or folder of numbered "
        ".npy files (clustered with Dask)",
    )
    fit.add_argument("--k", type=_positive_int, required=True, help="number of clusters")
    fit.add_argument(
        "--out", default=".", help="directory for the .npy files, created if missing (.)"
    )
    fit.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"))
    fit.add_argument("--seed", type=_seed, default=None, help="random seed")
    fit.add_argument("--init", choices=("k-means++", "k-means||", "random"), default="k-means++")
    fit.add_argument(
        "--n-init", type=_n_init, default="auto", help="runs from different starts (auto)"
    )
    fit.add_argument("--max-iter", type=_positive_int, default=300)
    fit.add_argument("--tol", type=_non_negative_number, default=1e-4)
    fit.add_argument(
        "--dtype",
        choices=("auto", "float32", "float64"),
        default="auto",
        help="compute in this dtype (auto: the file's; .csv files read as float64)",
    )
    fit.add_argument(
        "--deterministic", action="store_true", help="bitwise-repeatable sums on CuPy"
    )
    fit.set_defaults(run=_fit)

    bench = commands.add_parser(
        "bench",
        help="benchmark against scikit-learn and other peers, from a source checkout "
        "(see 'bench --help')",
        add_help=False,
        description="Run the benchmark suite; every option goes to it.",
    )
    bench.add_argument("options", nargs=argparse.REMAINDER)  # handled in main()

    demo = commands.add_parser(
        "demo",
        help="cluster the blog post's scene and print centres, iterations, inertia and backend",
        description="Generate the blog post's scene (random 2-D clusters), cluster it "
        "until the centroids stop changing, and print the result.",
    )
    _add_verbose(demo, top=False)
    _add_scene_options(demo, data=False)
    demo.set_defaults(run=_demo)
    return parser


@contextlib.contextmanager
def _terminating_signals_interrupt() -> Iterator[list[int]]:
    """SIGTERM and SIGHUP end the command as Ctrl-C does: the first one runs the SIGINT
    handler in place (Python's raises KeyboardInterrupt; the window's ends its loop), so
    partial files are removed and ffmpeg is stopped. Yields the signals received.
    Signals ignored when the command started (``nohup``) stay ignored."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, frame: Any) -> None:
        if received:
            return  # one is enough: the clean-up it started runs to its end
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = {}
    for number in TERMINATING_SIGNALS:
        if signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, on_signal)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # every option belongs to the benchmark's own parser
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _configure_logging(args.verbose)
    with _terminating_signals_interrupt() as received:
        try:
            return int(args.run(args))
        except KeyboardInterrupt:
            if received:
                name = signal.Signals(received[0]).name
                sys.stderr.write(f"kmeans-gpu {args.command}: terminated ({name})\n")
                return 128 + received[0]
            sys.stderr.write(f"kmeans-gpu {args.command}: interrupted\n")
            return EXIT_INTERRUPTED
        except (CommandError, ValueError) as exc:  # the arguments, the data, a value typed
            return _error(args.command, exc, EXIT_USAGE)
        except (NotImplementedError, RecursionError) as exc:  # RuntimeErrors that are bugs
            return _internal_error(args.command, exc)
        except RUNTIME_FAILURES as exc:  # the machine, the disk, ffmpeg, the install
            return _error(args.command, exc, EXIT_FAILURE)
        except ImportError as exc:
            if (exc.name or "").split(".")[0] in ("kmeans_gpu", "viz"):
                return _internal_error(args.command, exc)
            return _error(args.command, exc, EXIT_FAILURE)  # a dependency missing or broken
        except Exception as exc:  # a bug: never reported as a usage error
            return _internal_error(args.command, exc)


def _error(command: str, exc: BaseException, code: int) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    sys.stderr.write(f"kmeans-gpu {command}: error: {message}\n")
    return code


def _internal_error(command: str, exc: BaseException) -> int:
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = " ".join(str(exc).split())
    sys.stderr.write(
        f"kmeans-gpu {command}: internal error: {type(exc).__name__}: {message} (a bug in "
        "kmeans-gpu; please report it with the traceback above)\n"
    )
    return EXIT_FAILURE


__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CommandError",
    "IterationProgress",
    "build_parser",
    "has_display",
    "load_points",
    "main",
    "write_arrays",
]

if __name__ == "__main__":
    sys.exit(main())
