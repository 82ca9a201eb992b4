"""The viz renderer, export and interactive mode, headless (Agg)."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backend_bases import KeyEvent, MouseEvent
from matplotlib.colors import hsv_to_rgb

import kmeans_gpu as kg
import viz
from kmeans_gpu.display import make_scene

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


@pytest.fixture
def run():
    points = kg.generate_clusters(6, 40, 0.02, random_state=1)
    init = kg.initialize_centroids(6, points, random_state=2)
    return points, init, list(kg.iter_frames(points, init))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_renderer_artists_hold_the_frame(run):
    points, _, frames = run
    ax = plt.subplots()[1]
    renderer = viz.Renderer(ax, points, 6)
    for frame in (frames[0], frames[len(frames) // 2], frames[-1]):
        artists = renderer.draw(frame)
        assert set(artists) >= set(renderer.cluster_lines + renderer.centroid_lines)
        for k in range(6):
            x, y = renderer.cluster_lines[k].get_data()
            expected = points[frame.labels == k]
            np.testing.assert_array_equal(np.column_stack([x, y]), expected)
            cx, cy = renderer.centroid_lines[k].get_data()
            np.testing.assert_array_equal([cx[0], cy[0]], frame.centroids[k])
        assert renderer.text.get_text() == f"i = {frame.iteration}"
    for k, (cluster, centroid) in enumerate(
        zip(renderer.cluster_lines, renderer.centroid_lines, strict=True)
    ):
        colour = tuple(hsv_to_rgb((k / 6, 0.8, 0.8)))
        assert cluster.get_marker() == "x" and cluster.get_linestyle() == "None"
        assert matplotlib.colors.to_rgb(cluster.get_color()) == pytest.approx(colour)
        assert centroid.get_marker() == "o" and centroid.get_markeredgecolor() == "k"
        assert centroid.get_zorder() > cluster.get_zorder()
    assert renderer.text.axes is ax and renderer.text.get_transform() == ax.transAxes
    xmin, xmax = ax.get_xlim()
    span = points[:, 0].max() - points[:, 0].min()
    assert xmin == pytest.approx(points[:, 0].min() - 0.05 * span)
    assert xmax == pytest.approx(points[:, 0].max() + 0.05 * span)


def test_renderer_rejects_mismatched_labels(run):
    points, _, frames = run
    renderer = viz.Renderer(plt.subplots()[1], points[:10], 6)
    with pytest.raises(ValueError, match="labels for 10 displayed points"):
        renderer.draw(frames[0])


def test_pca_projection_for_many_features(rng):
    X = rng.normal(size=(300, 5)) * [5, 2, 1, 1, 1]
    frames = list(kg.iter_frames(X, X[:4]))
    anim = viz.animate(frames, X)
    assert anim.scene.projection.is_pca
    renderer = anim.renderer
    renderer.draw(frames[-1])
    cx, cy = renderer.centroid_lines[0].get_data()
    expected = anim.scene.projection(frames[-1].centroids)[0]
    np.testing.assert_allclose([cx[0], cy[0]], expected)
    assert "PC 1" in renderer.ax.get_xlabel()


def test_animate_takes_lists_and_generator_functions_not_generators(run):
    points, init, frames = run
    anim = viz.animate(frames, points)
    assert isinstance(anim, matplotlib.animation.FuncAnimation)
    assert anim._interval == 500 and anim._repeat
    anim = viz.animate(lambda: kg.iter_frames(points, init), points, trails=True)
    assert anim.renderer.trail_lines
    with pytest.raises(TypeError, match="not a generator object"):
        viz.animate(kg.iter_frames(points, init), points)
    with pytest.raises(ValueError, match="inertia_inset needs the frames as a list"):
        viz.animate(lambda: kg.iter_frames(points, init), points, inertia_inset=True)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_export_writes_every_frame(run, tmp_path, suffix):
    points, init, frames = run
    target = tmp_path / f"run{suffix}"
    saved = viz.save(viz.animate(frames, points, inertia_inset=True), target, fps=5, dpi=60)
    assert saved.path == target and saved.n_frames == len(frames)
    if suffix == ".mp4":
        assert imageio_ffmpeg.count_frames_and_secs(str(target))[0] == len(frames)
    else:
        from PIL import Image

        assert Image.open(target).n_frames == len(frames)
    assert _files(tmp_path) == [target.name]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    again = viz.save(lambda: kg.iter_frames(points, init), tmp_path / "b.gif", points=points)
    assert again.n_frames == len(frames)


def test_unknown_suffix_and_missing_directory(run, tmp_path):
    points, _, frames = run
    with pytest.raises(ValueError, match=r"use a name ending in \.mp4 or \.gif"):
        viz.save(frames, tmp_path / "x.avi", points=points)
    with pytest.raises(ValueError, match="does not exist"):
        viz.save(frames, tmp_path / "no" / "x.mp4", points=points)
    assert _files(tmp_path) == []


def test_missing_ffmpeg_fails_before_rendering(run, tmp_path, monkeypatch):
    points, _, frames = run
    monkeypatch.delenv("KMEANS_GPU_FFMPEG", raising=False)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    monkeypatch.setattr(viz._export.shutil, "which", lambda name: None)
    rendered = []
    monkeypatch.setattr(viz._export, "animate", lambda *a, **k: rendered.append(1))
    with pytest.raises(viz.WriterUnavailableError, match="no ffmpeg found") as info:
        viz.save(frames, tmp_path / "x.mp4", points=points)
    assert "\n" not in str(info.value) and "pip install" in str(info.value)
    assert rendered == [] and _files(tmp_path) == []


def test_ffmpeg_lookup_order(tmp_path, monkeypatch):
    fake = tmp_path / "my-ffmpeg"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert viz.find_ffmpeg(fake) == str(fake)
    monkeypatch.setenv("KMEANS_GPU_FFMPEG", str(fake))
    assert viz.find_ffmpeg() == str(fake)
    monkeypatch.setenv("KMEANS_GPU_FFMPEG", str(tmp_path / "missing"))
    with pytest.raises(viz.WriterUnavailableError, match="KMEANS_GPU_FFMPEG"):
        viz.find_ffmpeg()
    monkeypatch.delenv("KMEANS_GPU_FFMPEG")
    monkeypatch.setattr(viz._export.shutil, "which", lambda name: None)
    assert viz.find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_export_leaves_nothing(run, tmp_path, monkeypatch, error):
    points, _, frames = run
    calls = []

    def interrupt(i, n):
        calls.append(i)
        if i == 3:
            raise error("stop")

    original = matplotlib.animation.Animation.save

    def save_with_callback(self, filename, *args, **kwargs):
        kwargs["progress_callback"] = interrupt
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(matplotlib.animation.Animation, "save", save_with_callback)
    with pytest.raises(error):
        viz.save(frames, tmp_path / "x.mp4", points=points)
    assert calls and _files(tmp_path) == []


def test_default_filename_is_zero_padded():
    from datetime import datetime

    assert viz.default_filename(datetime(2026, 1, 2, 3, 4, 5)) == "20260102030405_KMeans2D.mp4"


def _click(button):
    fig = button.ax.figure
    x, y = button.ax.transAxes.transform((0.5, 0.5))
    for name in ("button_press_event", "button_release_event"):
        MouseEvent(name, fig.canvas, x, y, button=1)._process()


def _key(fig, key):
    KeyEvent("key_press_event", fig.canvas, key)._process()


def test_interactive_session_buttons_and_keys(tmp_path):
    out = io.StringIO()
    session = viz.InteractiveSession(
        k=5,
        random_state=0,
        save_dir=str(tmp_path),
        scene={"num_clusters": 5, "pts_per_cluster": 30},
        out=out,
    )
    fig = session.figure
    points, frames = session.points, session.frames
    assert session.frame.iteration == 0 and len(frames) > 1
    by_name = {b.label.get_text(): b for b in session.buttons}

    _click(by_name["Step (n)"])  # pauses and advances one frame
    assert session.paused and session.frame.iteration == 1
    _key(fig, "n")
    assert session.frame.iteration == 2
    _key(fig, " ")
    assert not session.paused
    _key(fig, " ")
    assert session.paused

    _click(by_name["New centroids (2)"])  # a new run, playing
    assert session.points is points and session.frames is not frames
    assert not session.paused
    assert session.frame.iteration == 0
    _key(fig, "1")
    assert session.points is not points

    _click(by_name["Save (3)"])
    saved = [p for p in tmp_path.iterdir() if p.name.endswith("_KMeans2D.mp4")]
    assert len(saved) == 1
    assert imageio_ffmpeg.count_frames_and_secs(str(saved[0]))[0] == len(session.frames)
    assert out.getvalue() == f"Saved {len(session.frames)} frames to {saved[0]}\n"

    _click(by_name["Exit (4)"])
    assert session.closed and not plt.fignum_exists(fig.number)
    assert session.failure is None


def test_given_data_keeps_its_points(rng):
    data = rng.normal(size=(200, 3))
    session = viz.InteractiveSession(k=3, data=data, random_state=0, max_points=50)
    session.new_data()
    assert session.points is data
    assert session.display.points.shape == (50, 2) and len(session.frame.labels) == 50
    session.close()


def test_terminal_menu(tmp_path):
    session = viz.InteractiveSession(
        k=4,
        random_state=1,
        save_dir=str(tmp_path),
        scene={"num_clusters": 4, "pts_per_cluster": 20},
    )
    answers = iter(["2", "x", "3", "1", "4"])
    prompts = []

    def read(prompt):
        prompts.append(prompt)
        return next(answers)

    out = io.StringIO()
    viz.run_menu(session, read=read, out=out)
    text = out.getvalue()
    assert "(1) Randomize clusters and centroids" in prompts[0]
    assert "Randomizing centroids..." in text and "Invalid selection." in text
    assert "Randomizing clusters and centroids..." in text
    assert "Saved" in text and session.closed
    assert len([p for p in os.listdir(tmp_path) if p.endswith(".mp4")]) == 1


def test_make_scene_samples_on_the_backend(backend, rng):
    X = backend.asarray(rng.normal(size=(1000, 2)))
    scene = make_scene(X, max_points=100, random_state=0)
    assert scene.points.shape == (100, 2) and isinstance(scene.points, np.ndarray)
    np.testing.assert_array_equal(scene.points, backend.to_numpy(X)[scene.indices])


def test_viz_imports_no_cupy():
    import subprocess

    code = "import sys, viz; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# -- the look: legible centres, a title, palettes ---------------------------------------


def test_centres_stand_out_above_everything(run):
    """Larger centres with a black edge and a white halo, above the points, the
    trails and the inertia inset; the blog post's 'x' points and 'o' centres stay."""
    from matplotlib.patheffects import Stroke

    points, _, frames = run
    anim = viz.animate(frames, points, trails=True, inertia_inset=True)
    renderer = anim.renderer
    (inset,) = renderer.ax.child_axes
    for centre in renderer.centroid_lines:
        assert centre.get_marker() == "o" and centre.get_markersize() >= 10
        assert centre.get_markeredgecolor() == "k" and centre.get_markeredgewidth() >= 1.5
        (halo, _) = centre.get_path_effects()
        assert isinstance(halo, Stroke) and halo._gc["foreground"] == "w"
        assert halo._gc["linewidth"] > centre.get_markeredgewidth()
        assert centre.get_zorder() > max(
            line.get_zorder() for line in renderer.cluster_lines + renderer.trail_lines
        )
        assert centre.get_zorder() > inset.get_zorder()
    assert renderer.text.get_zorder() > renderer.centroid_lines[0].get_zorder()
    assert inset.patch.get_alpha() < 1  # points beneath the inset still show


def test_title_and_axis_labels(run, rng):
    points, _, frames = run
    renderer = viz.animate(frames, points).renderer
    assert renderer.ax.get_title() == "K-means: k = 6, n = 240"
    assert (renderer.ax.get_xlabel(), renderer.ax.get_ylabel()) == ("x", "y")
    assert viz.animate(frames, points, title="").renderer.ax.get_title() == ""
    X = rng.normal(size=(300, 5))
    scene = make_scene(X, max_points=100, random_state=0)
    title = viz.scene_title(4, 300, backend="numpy", n_drawn=100, projection=scene.projection)
    assert title == "K-means: k = 4, n = 300 (numpy)\n100 drawn, 2-D PCA projection of 5 features"
    assert viz.scene_title(12, 1200, backend="cupy") == "K-means: k = 12, n = 1,200 (cupy)"


def test_palettes():
    hsv = viz.cluster_colors(12)
    assert hsv == viz.cluster_colors(12, "hsv")
    assert hsv[1] == pytest.approx(tuple(hsv_to_rgb((1 / 12, 0.8, 0.8))))
    assert viz.cluster_markers(12) == [("x", "o")] * 12
    safe = viz.cluster_colors(20, "colorblind")
    okabe_ito = [matplotlib.colors.to_rgb(c) for c in viz._render.OKABE_ITO]
    assert safe[:8] == okabe_ito and safe[8:16] == okabe_ito and safe[16:] == okabe_ito[:4]
    markers = viz.cluster_markers(40, "colorblind")
    assert markers[0] == ("x", "o") and markers[7] == ("x", "o")
    assert len(set(zip(safe, markers[:20], strict=True))) == 20  # every cluster told apart
    assert len(set(markers[:32])) == 4 and markers[32] == markers[0]
    with pytest.raises(ValueError, match="palette must be one of 'hsv', 'colorblind'"):
        viz.cluster_colors(3, "rainbow")


def test_the_colorblind_palette_reaches_the_artists(run):
    points, _, frames = run
    points = np.tile(points, (2, 1))
    big = list(kg.iter_frames(points, points[::24][:10]))
    renderer = viz.animate(big, points, palette="colorblind").renderer
    assert renderer.cluster_lines[8].get_marker() == "+"
    assert renderer.centroid_lines[8].get_marker() == "s"
    assert matplotlib.colors.to_rgb(renderer.cluster_lines[8].get_color()) == pytest.approx(
        matplotlib.colors.to_rgb(viz._render.OKABE_ITO[0])
    )
    with pytest.raises(ValueError, match="palette must be one of"):
        viz.animate(frames, points[:240], palette="viridis")


def test_save_checks_its_values_and_says_saved(run, tmp_path):
    points, _, frames = run
    for options, message in [
        ({"fps": 0}, "fps must be a positive integer, got 0"),
        ({"fps": 2.5}, "fps must be a positive integer, got 2.5"),
        ({"dpi": 0}, "dpi must be a positive number, got 0"),
        ({"dpi": float("nan")}, "dpi must be a positive number"),
        ({"timeout": -1}, "timeout must be a positive number, got -1"),
    ]:
        with pytest.raises(ValueError, match=message):
            viz.save(frames, tmp_path / "x.gif", points=points, **options)
    assert _files(tmp_path) == []
    saved = viz.save(frames[:2], tmp_path / "x.gif", points=points, dpi=30)
    assert saved.message == f"Saved 2 frames to {tmp_path / 'x.gif'}"


def test_a_save_replaces_a_symlink_and_never_follows_it(run, tmp_path):
    points, _, frames = run
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "x.gif").symlink_to(victim)
    viz.save(frames[:2], tmp_path / "x.gif", points=points, dpi=30)
    assert victim.read_text() == "keep me" and not (tmp_path / "x.gif").is_symlink()
