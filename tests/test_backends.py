"""The backend registry, and every backend-specific operation against the generic one."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import subprocess
import sys
import threading
import warnings

import array_api_compat.numpy as compat_np
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import kmeans_gpu
from kmeans_gpu import KMeans, available_backends, get_backend
from kmeans_gpu.backends import Backend, backend_for_array
from kmeans_gpu.backends._base import centred64, tie_margin

from .checks import nearest_exactly


def test_import_pulls_in_neither_cupy_nor_matplotlib():
    code = (
        "import sys, kmeans_gpu; "
        "kmeans_gpu.kmeans([[0.0], [1.0]], 1, backend='numpy'); "
        "print(sorted(m for m in ('cupy', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # numba (a second or more to import) comes in with the first NumPy fit, not before
    code = "import sys, kmeans_gpu; from kmeans_gpu import KMeans; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    # nor any other dependency but NumPy: the import works where only NumPy is installed
    code = (
        "import sys, kmeans_gpu; print(sorted(m for m in "
        "('numba', 'array_api_compat', 'scipy', 'sklearn', 'dask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_core_never_imports_the_experimental_package():
    """No module of kmeans_gpu outside ``experimental/`` (nor viz) imports it."""
    import ast
    from pathlib import Path

    root = Path(kmeans_gpu.__file__).parent
    modules = [p for p in root.rglob("*.py") if "experimental" not in p.parts]
    modules += list((root.parent / "viz").glob("*.py"))
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any("experimental" in name.split(".") for name in names), path


def test_registry_names():
    assert available_backends()[0] == "numpy"
    assert get_backend("numpy").name == "numpy"
    assert get_backend("numpy") is get_backend("numpy")
    with pytest.raises(ValueError, match="valid backends are 'auto', 'numpy', 'cupy'"):
        get_backend("jax")
    with pytest.raises(TypeError, match="array library"):
        get_backend(object())


def test_auto_picks_cupy_only_with_a_device(monkeypatch, caplog):
    from kmeans_gpu import backends

    monkeypatch.setattr(backends, "_cupy_has_device", lambda: False)
    with caplog.at_level(logging.INFO, logger="kmeans_gpu"):
        assert get_backend("auto").name == "numpy"
    assert "backend='auto' chose 'numpy'" in caplog.text


def test_cupy_without_a_driver_is_unavailable_not_a_crash(monkeypatch):
    """getDeviceCount raising (no driver) means 'not available'."""
    from kmeans_gpu import backends

    class FakeRuntime:
        @staticmethod
        def getDeviceCount():
            raise RuntimeError("cudaErrorInsufficientDriver")

    fake = type(sys)("cupy")
    fake.cuda = type(sys)("cupy.cuda")
    fake.cuda.runtime = FakeRuntime
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object())
    backends._cupy_has_device.cache_clear()
    try:
        assert backends._cupy_has_device() is False
        assert "cupy" not in available_backends()
    finally:
        backends._cupy_has_device.cache_clear()


def test_backend_of_an_array(backend):
    x = backend.asarray(np.zeros((2, 2)))
    found = backend_for_array(x)
    assert found is not None and found.owns(x)
    assert backend_for_array([[1.0]]) is None


def test_auto_keeps_arrays_on_their_library(backend, rng, caplog):
    X = backend.asarray(rng.normal(size=(50, 2)))
    with caplog.at_level(logging.INFO, logger="kmeans_gpu"):
        est = KMeans(3, random_state=0).fit(X)
    expected = {"numpy": "numpy", "cupy": "cupy"}.get(backend.name, "array_api_strict")
    assert est.backend_ == expected
    assert f"computing on '{expected}'" in caplog.text


def test_explicit_backend_converts_back_to_the_input_type(backend, rng):
    X = backend.asarray(rng.normal(size=(50, 2)))
    est = KMeans(3, random_state=0, backend="numpy").fit(X)
    assert est.backend_ == "numpy"
    assert backend.owns(est.cluster_centers_) and backend.owns(est.labels_)
    assert backend.owns(est.predict(X))
    reference = KMeans(3, random_state=0).fit(X)
    np.testing.assert_array_equal(
        backend.to_numpy(est.labels_), backend.to_numpy(reference.labels_)
    )


def test_lists_go_to_numpy_here():
    est = KMeans(2, random_state=0, backend="auto").fit([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    assert isinstance(est.cluster_centers_, np.ndarray)
    assert est.backend_ in available_backends()


# -- every override against the generic operation it replaces -------------------------
GENERIC = Backend(compat_np, "generic-numpy")


@pytest.fixture(autouse=True)
def _compiled_kernels_whatever_the_size(monkeypatch):
    if importlib.util.find_spec("numba") is not None:
        from kmeans_gpu.backends import _numba

        monkeypatch.setattr(_numba, "SMALL_WORK", 0)


def _fast_backends():
    from kmeans_gpu.backends import _numpy

    yield _numpy._numpy_backend(compiled=False)
    yield _numpy._numpy_backend(compiled=True)  # numba's kernels, when installed
    if "cupy" in available_backends():
        yield get_backend("cupy")


def _score_gap_is_clear(X, C, labels, best, second):
    """Rows whose two best scores are far apart (where every path must agree)."""
    scale = np.abs(best) + np.abs(second) + 1.0
    return (second - best) > 1e-3 * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("d", "k"), [(1, 1), (1, 13), (2, 13), (5, 32), (8, 33), (8, 64), (8, 65), (9, 13), (40, 300)]
)
def test_overrides_match_generic(dtype, d, k, rng):
    """Each fast operation against the generic one: the two nearest scores to rounding
    (and the same labels wherever they are apart), the float64 sums, distances and
    inertia bitwise between NumPy with and without numba, to rounding elsewhere."""
    from kmeans_gpu.backends._base import rescale

    n = 700
    X = rng.normal(size=(n, d)).astype(dtype)
    C = (X[rng.choice(n, k, replace=False)] + 0.01).astype(dtype)
    csq = (C * C).sum(axis=1)
    w = rng.uniform(0, 2, size=n).astype(dtype)
    origin = (np.full(d, 0.25), -3)
    labels, best, second = (np.array(a) for a in GENERIC.nearest_two(X, C, csq))
    clear = _score_gap_is_clear(X, C, labels, best, second)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    results = []
    for fast in _fast_backends():
        to, back = fast.asarray, fast.to_numpy
        got = [back(a).copy() for a in fast.nearest_two(to(X), to(C), to(csq))]
        assert got[0].dtype == np.int32 and got[1].dtype == dtype
        np.testing.assert_array_equal(got[0][clear], labels[clear])
        np.testing.assert_allclose(got[1], best, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(got[2], second, rtol=rtol, atol=rtol)
        _check_labels_and_ties(fast, X, C, csq, labels, best, second, clear)
        one = {}
        for name, weights in (("unweighted", None), ("weighted", w)):
            sums, totals = fast.cluster_sums(
                to(X), (to(origin[0]), origin[1]), to(labels), None if weights is None
                else to(weights), k,
            )  # fmt: skip
            want_s, want_w = GENERIC.cluster_sums(X, origin, labels, weights, k)
            np.testing.assert_allclose(back(sums), want_s, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(back(totals), want_w, rtol=1e-12)
            assert back(sums).dtype == back(totals).dtype == np.float64
            inertia = fast.inertia_of(
                to(X), to(C), to(labels), None if weights is None else to(weights), -3
            )
            want = GENERIC.inertia_of(X, C, labels, weights, -3)
            np.testing.assert_allclose(float(inertia), float(want), rtol=1e-12)
            one[name] = (back(sums), back(totals), float(inertia))
        for shift in (3, 0, -3):  # working rows: bitwise centred64's, either order
            origin_ = (np.full(d, 0.25), shift)
            rows = back(fast.rows64(to(X), (to(origin_[0]), shift)))
            np.testing.assert_array_equal(rows, centred64(np, X, origin_))
        norms = back(fast.row_norms(to(X)))
        assert norms.dtype == dtype
        np.testing.assert_allclose(norms, (X.astype(np.float64) ** 2).sum(axis=1), rtol=rtol)
        d2 = back(fast.sq_distances(to(X), to(C), to(labels), 2))
        diff = rescale(X.astype(np.float64) - C[labels].astype(np.float64), 2)
        np.testing.assert_allclose(d2, (diff**2).sum(axis=1), rtol=1e-12)
        one["distances"] = d2
        results.append((fast.name, one))
        for used in (labels, labels[:1], labels[labels % 3 == 0]):
            assert fast.distinct(to(used), k) == GENERIC.distinct(used, k)
        for m in (1, 3, 10):
            got = back(fast.farthest(to(d2), m))
            assert sorted(d2[got].tolist()) == sorted(d2[GENERIC.farthest(d2, m)].tolist())
            assert d2[got[0]] == d2.max()
    # NumPy with and without numba: bitwise the same float64 results
    (_, plain), (_, compiled) = results[:2]
    for name in plain:
        np.testing.assert_equal(compiled[name], plain[name])


def _check_labels_and_ties(fast, X, C, csq, labels, best, second, clear):
    """``fast.labels_and_ties`` against the generic scores ``best``/``second``: the same
    labels where the scores are apart; flagged wherever the generic gap is within half
    the margin, never where it exceeds twice the margin (scores differ by rounding)."""
    to, back = fast.asarray, fast.to_numpy
    rows_sq, largest = (X * X).sum(axis=1), np.sqrt(csq.max())
    for factor in (1e-3, 0.5):
        own, near = (
            back(a).copy()
            for a in fast.labels_and_ties(to(X), to(C), to(csq), to(rows_sq), factor, to(largest))
        )
        assert own.dtype == np.int32 and near.dtype == np.bool_
        np.testing.assert_array_equal(own[clear], labels[clear])
        gap = second - best
        assert near[gap <= tie_margin(np, rows_sq, factor / 2, largest)].all()
        assert not near[gap > tie_margin(np, rows_sq, factor * 2, largest)].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_near_tie_margin_is_the_generic_one(dtype, rng):
    """numba's near-tie flags: bitwise ``tie_margin``'s comparison, for the same scores."""
    kernels = pytest.importorskip("kmeans_gpu.backends._numba_kernels")
    n = 5000
    best = rng.normal(size=n).astype(dtype)
    second = best + np.abs(rng.normal(scale=1e-3, size=n)).astype(dtype)
    rows_sq = rng.uniform(0, 4, size=n).astype(dtype)
    largest = dtype(1.5)
    for factor in (1e-5, 1e-4, 3e-4):
        near = np.empty(n, np.bool_)
        kernels.near_ties(best, second, rows_sq, dtype(factor), largest, near)
        want = (second - best) <= tie_margin(np, rows_sq, factor, largest)
        np.testing.assert_array_equal(near, want)
        assert 0 < near.sum() < n


@pytest.mark.parametrize("k", [1, 2, 4, 5, 8, 9, 255])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_scan_keeps_the_two_smallest_scores(k, dtype, rng):
    """numba's scan of BLAS scores (four clusters a sweep, the rest one at a time): the
    first smallest score's cluster, the smallest and the second-smallest, exactly."""
    kernels = pytest.importorskip("kmeans_gpu.backends._numba_kernels")
    m = 1000
    scores = rng.normal(size=(k, m)).astype(dtype)
    squares = rng.uniform(size=k).astype(dtype)
    if k > 2:  # exact ties between the last cluster and the first
        scores[-1], squares[-1] = scores[0], squares[0]
    out = np.empty(m, np.int32), np.empty(m, dtype), np.empty(m, dtype)
    kernels.scan_two(scores, squares, *out)
    full = scores + squares[:, None]
    np.testing.assert_array_equal(out[0], full.argmin(axis=0))
    np.testing.assert_array_equal(out[1], full.min(axis=0))
    second = np.sort(full, axis=0)[1] if k > 1 else np.full(m, np.inf)
    np.testing.assert_array_equal(out[2], second)


def test_version_is_exported():
    assert kmeans_gpu.__version__


def test_sums_over_blocks_are_added_as_a_tree_on_both_numpy_paths(rng):
    """Over several fixed blocks (and a partial one): each block's rows in order, the
    blocks as ``fold``'s binary tree; bitwise alike with and without numba, and equal
    to that definition written out."""
    from kmeans_gpu.backends import _numpy
    from kmeans_gpu.backends._base import fold

    pure, compiled = _numpy._numpy_backend(False), _numpy._numpy_backend(True)
    block = pure.sum_block_rows
    n, d, k = 5 * block + 123, 3, 7
    X = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.randint(0, k, size=n).astype(np.int32)
    w = rng.uniform(0.5, 2.0, size=n)
    C = rng.normal(size=(k, d)).astype(np.float32)
    origin = (np.full(d, 0.5), 1)
    for weights in (None, w):
        got = [pure.cluster_sums(X, origin, labels, weights, k)]
        got.append(compiled.cluster_sums(X, origin, labels, weights, k))
        blocks = [(a, min(a + block, n)) for a in range(0, n, block)]
        parts = [
            pure._block_sums(X[a:b], origin, labels[a:b], None if weights is None
                             else weights[a:b], k)
            for a, b in blocks
        ]  # fmt: skip
        want = fold(((a, b, p[0]) for (a, b), p in zip(blocks, parts, strict=True)), block)
        for sums, _ in got:
            np.testing.assert_array_equal(sums, want)
        inertia = [b.inertia_of(X, C, labels, weights, 1) for b in (pure, compiled)]
        np.testing.assert_array_equal(inertia[0], inertia[1])


@pytest.mark.parametrize("m", [1, 1000, 1024, 32768])
def test_running_minima_buffers_are_apart_within_their_pages(m):
    """The reused labels, best and second buffers: disjoint, of their dtypes and length,
    at different offsets within their pages (4K aliasing slows the running minima)."""
    from kmeans_gpu.backends import _numpy

    buffers = _numpy.NumpyBackend()._nearest_two_buffers(m, np.float32)
    assert [b.dtype for b in buffers] == [np.int32, np.float32, np.float32]
    assert all(b.shape == (m,) and b.flags.c_contiguous for b in buffers)
    spans = sorted((b.ctypes.data, b.ctypes.data + b.nbytes) for b in buffers)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
    offsets = {b.ctypes.data % _numpy.PAGE for b in buffers}
    assert len(offsets) == 3


def test_score_blocks_and_both_nearest_two_methods_agree(rng, monkeypatch):
    """Cache blocks smaller than the chunk, running minima and argmin/partition, numba's
    kernels: the same labels and scores, and near ties."""
    from kmeans_gpu.backends import _numba, _numpy

    X = rng.normal(size=(5000, 3)).astype(np.float32)
    for k in (1, 2, 31, 32, 33, 255):
        C = rng.normal(size=(k, 3)).astype(np.float32)
        csq = (C * C).sum(axis=1)
        want = [np.array(a) for a in GENERIC.nearest_two(X, C, csq)]
        clear = _score_gap_is_clear(X, C, *want)
        for fast in _fast_backends():
            if fast.name != "numpy":
                continue
            for block in (1 << 12, 1 << 20):
                monkeypatch.setattr(_numpy, "BLOCK_BYTES", block)
                monkeypatch.setattr(_numba, "SCAN_BLOCK_BYTES", block)
                got = [np.array(a) for a in fast.nearest_two(X, C, csq)]
                np.testing.assert_array_equal(got[0][clear], want[0][clear])
                np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-5)
                _check_labels_and_ties(fast, X, C, csq, *want, clear)


@pytest.mark.parametrize("d", [1, 2, 8, 9])
def test_exact_ties_go_to_the_first_centre_on_every_path(backend, d, rng):
    """On a small integer grid ties are real: every backend must pick the first of the
    tied centres, in predict and in a fit's labels."""
    X = rng.randint(0, 3, size=(3000, d)).astype(np.float32)
    C = np.vstack([rng.randint(0, 3, size=(40, d)), np.zeros((3, d))]).astype(np.float32)
    with warnings.catch_warnings():  # duplicate centres may collapse
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = KMeans(43, init=backend.asarray(C), n_init=1, max_iter=1).fit(backend.asarray(X))
    centers = backend.to_numpy(est.cluster_centers_)
    np.testing.assert_array_equal(backend.to_numpy(est.labels_), nearest_exactly(X, centers))
    est.cluster_centers_ = backend.asarray(C)  # predict: the exact nearest of these
    np.testing.assert_array_equal(
        backend.to_numpy(est.predict(backend.asarray(X))), nearest_exactly(X, C)
    )


def test_small_problems_do_not_load_numba():
    """Loading numba takes about half a second; the blog post's scene needs none of it."""
    code = (
        "import sys, kmeans_gpu as kg; "
        "X = kg.generate_clusters(random_state=0); kg.kmeans(X, 12, random_state=0); "
        "print('numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_numba_is_used_when_installed_unless_switched_off(monkeypatch):
    pytest.importorskip("numba")
    from kmeans_gpu.backends._numba import NumbaBackend
    from kmeans_gpu.backends._numpy import NumpyBackend

    assert isinstance(get_backend("numpy"), NumbaBackend)
    monkeypatch.setenv("KMEANS_GPU_NUMBA", "0")
    assert type(get_backend("numpy")) is NumpyBackend
    X = np.random.default_rng(0).normal(size=(500, 3))
    assert type(get_backend(X)) is NumpyBackend


def test_threaded_chunks_give_the_sequential_result(rng, monkeypatch):
    from kmeans_gpu.backends import _numpy

    X = rng.normal(size=(20_000, 5))
    w = rng.uniform(0.1, 2, size=20_000)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(_numpy, "effective_threads", lambda t=threads: t)
        est = KMeans(20, random_state=0, working_memory=1 << 16, backend="numpy")
        results.append(est.fit(X, sample_weight=w))
    for other in results[1:]:
        np.testing.assert_array_equal(other.labels_, results[0].labels_)
        np.testing.assert_allclose(other.cluster_centers_, results[0].cluster_centers_)
        assert other.n_iter_ == results[0].n_iter_


def test_a_lower_thread_limit_holds_after_a_higher_one(monkeypatch):
    """Chunks run on at most as many threads as allowed now, also after a pass that was
    allowed more (the pool does not keep its extra threads busy)."""
    import time

    from kmeans_gpu.backends import _numpy

    backend = _numpy.NumpyBackend()
    lock, running, most, names = threading.Lock(), [0], [0], set()

    def work(start: int, stop: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            names.add(threading.current_thread().name)
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return start

    ranges = [(i, i + 1) for i in range(24)]
    for threads in (3, 2):
        monkeypatch.setattr(_numpy, "effective_threads", lambda t=threads: t)
        most[0] = 0
        names.clear()
        assert list(backend.map_chunks(work, ranges)) == list(range(24))
        assert most[0] <= threads and len(names) <= threads


@pytest.mark.parametrize("compiled", [False, True])
def test_every_product_of_a_fit_runs_with_blas_held_to_one_thread(compiled, monkeypatch):
    """Matrix products run on the backend's threads with BLAS held to one thread, near
    ties' included: one in the caller's thread would wake BLAS's own threads, which then
    spin on the cores the next pass needs (that halved the speed of a 2-core fit)."""
    from kmeans_gpu.backends import _numba, _numpy

    monkeypatch.setattr(_numba, "SMALL_WORK", 0)
    backend = _numpy._numpy_backend(compiled)
    held = []
    for name in ("scores", "_score_blocks"):
        original = getattr(_numpy.NumpyBackend, name)

        def recorded(self, *args, _original=original, **kwargs):
            held.append(_numpy.one_blas_thread.found is not None)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(_numpy.NumpyBackend, name, recorded)
    rng = np.random.default_rng(3)
    X = rng.integers(0, 4, size=(6000, 40)).astype(np.float32)  # exact ties: settled
    KMeans(40, init=X[:40], n_init=1, max_iter=5, backend=backend).fit(X)
    assert held and all(held)


def test_thread_count_respects_user_limits(monkeypatch):
    from threadpoolctl import threadpool_limits

    from kmeans_gpu.backends._numpy import effective_threads

    assert effective_threads() >= 1
    with threadpool_limits(limits=1, user_api="blas"):
        assert effective_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert effective_threads() == 1


def test_torch_tensors_run_through_the_generic_path(rng):
    """Any array API library: torch (when installed) computes on its own tensors."""
    torch = pytest.importorskip("torch")
    X = rng.normal(size=(400, 3))
    est = KMeans(4, random_state=0).fit(torch.from_numpy(X))
    assert isinstance(est.cluster_centers_, torch.Tensor) and est.backend_ == "torch"
    reference = KMeans(4, random_state=0).fit(X)
    np.testing.assert_array_equal(est.labels_.numpy(), reference.labels_)
    np.testing.assert_allclose(est.cluster_centers_.numpy(), reference.cluster_centers_)


@pytest.mark.gpu
def test_torch_cuda_tensors_cross_to_cupy_without_a_copy(rng):
    """backend="cupy" with a torch CUDA tensor: DLPack both ways, torch tensors back."""
    torch = pytest.importorskip("torch")
    from kmeans_gpu.backends import _cupy_has_device

    if not (_cupy_has_device() and torch.cuda.is_available()):
        pytest.skip("needs CuPy and torch with a CUDA device")
    from kmeans_gpu._validation import check_array

    X = torch.from_numpy(rng.normal(size=(2000, 8)).astype(np.float32)).cuda()
    moved, placement = check_array(X, backend="cupy")
    assert placement.dlpack and moved.data.ptr == X.data_ptr()  # the same memory
    est = KMeans(5, init=X[:5], backend="cupy").fit(X)
    assert isinstance(est.cluster_centers_, torch.Tensor) and est.cluster_centers_.is_cuda
    host = X.cpu().numpy()
    reference = KMeans(5, init=host[:5]).fit(host)
    np.testing.assert_array_equal(est.labels_.cpu().numpy(), reference.labels_)


def test_fits_from_user_threads_use_the_pool_and_agree(rng):
    """A fit started from a user's thread gets the thread pool too, and concurrent fits
    from several threads give the single-threaded result."""
    from concurrent.futures import ThreadPoolExecutor

    X = rng.normal(size=(30_000, 3))
    expected = KMeans(8, random_state=0, backend="numpy").fit(X)
    with ThreadPoolExecutor(3) as pool:
        fits = list(pool.map(lambda _: KMeans(8, random_state=0).fit(X), range(3)))
    for est in fits:
        np.testing.assert_array_equal(est.labels_, expected.labels_)
        assert est.n_iter_ == expected.n_iter_


def test_steps_on_device_of_passes_values_through_and_closes_its_steps():
    """Generators scoped step by step (the frame streams) return what the steps return,
    and a caller that stops early closes the steps too (their clean-up runs then)."""
    from kmeans_gpu.backends import steps_on_device_of

    closed = []

    def steps():
        try:
            yield 1
            yield 2
            return "done"
        finally:
            closed.append(True)

    outer = steps_on_device_of(np.zeros(1), steps())
    assert next(outer) == 1
    outer.close()
    assert closed == [True]
    outer = steps_on_device_of(np.zeros(1), steps())
    assert list(outer) == [1, 2]
    gen = steps_on_device_of(np.zeros(1), steps())
    next(gen), next(gen)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
