"""Inline display (viz/notebook.py, the facade's IPython formatters) and fit(verbose=...) progress (train/progress.py).

Every HTML output is checked for well-formed nesting, for escaping (class names and titles that are HTML), and
for being offline (no external URL); progress for Keras's line format and for its throttle.
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest

import mlplab
from mlplab.errors import MlplabError
from mlplab.train import progress as progress_mod

HOSTILE = ['<script>alert("x")</script>', 'a" onmouseover="alert(1)', "T-shirt & top", "</table><b>"]
# XML namespace names and BokehJS's default server address (ws://localhost, never used offline) are not fetched
EXTERNAL = re.compile(r"\b(?:https?://(?!www\.w3\.org/)|wss?://(?!localhost[:/])|ftp://)")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class NestingChecker(HTMLParser):
    """Fails on a closing tag that does not match the open one (script/style bodies are CDATA to the parser)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.problems, self.scripts = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "script":
            self.scripts.append(data)


def check_html(page: str) -> NestingChecker:
    checker = NestingChecker()
    checker.feed(page)
    checker.close()
    assert checker.problems == [] and checker.stack == [], (checker.problems, checker.stack)
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    for hostile in HOSTILE:
        assert hostile not in page
    return checker


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    x = rng.random((120, 16), dtype=np.float32)
    y = (x[:, 0] * 4).astype(np.int64)  # 4 classes, learnable from the first feature
    model = mlplab.build("12:relu,dropout:0.1,4:softmax", 16, seed=0)
    history = mlplab.fit(model, x, y, epochs=3, batch_size=16, lr=0.1, validation_split=0.25, verbose=0)
    metrics = mlplab.evaluate(model, x, y, class_names=HOSTILE)
    return model, history, metrics, x, y


@pytest.fixture(scope="module")
def shell():
    interactive = pytest.importorskip("IPython.core.interactiveshell")
    sh = interactive.InteractiveShell.instance()
    assert mlplab.register_display(sh) is True
    return sh


def shown(shell, obj) -> dict:
    data, _ = shell.display_formatter.format(obj)
    return data


def test_history_displays_its_curves_and_numbers(shell, trained):
    _, history, _, _, _ = trained
    data = shown(shell, history)
    page = data["text/html"]
    check_html(page)
    assert page.count('src="data:image/png;base64,') == 1 and "3 epochs" in page
    last = history.rows[-1]
    assert f"{last['val_accuracy']:.4f}" in page and f"{last['loss']:.4f}" in page
    text = data["text/plain"]
    assert text.splitlines()[0] == "History(3 epochs)" and f"loss: {last['loss']:.4f}" in text
    fig = history.plot()
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["loss", "accuracy"]
    assert "image/png" in shown(shell, fig)  # a returned Figure shows itself, even before pyplot is imported


def test_metrics_is_the_old_dict_and_shows_a_table_and_matrix(shell, trained):
    _, _, metrics, _, y = trained
    assert isinstance(metrics, dict) and isinstance(metrics, mlplab.Metrics)
    assert metrics.accuracy == metrics["test_accuracy"] and metrics.confusion_matrix.sum() == len(y)
    page = shown(shell, metrics)["text/html"]
    check_html(page)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # the class name, shown as text
    assert "T-shirt &amp; top" in page and 'alt="confusion matrix"' in page
    assert f"{metrics['test_accuracy']:.4f}" in page
    text = repr(metrics)
    assert text.startswith(f"Metrics(test: accuracy {metrics['test_accuracy']:.4f}") and len(text.splitlines()) == 6


def test_model_displays_its_keras_summary(shell, trained):
    model = trained[0]
    page = shown(shell, model)["text/html"]
    check_html(page)
    assert "dense_1 (Dense)" in page and "Total params: 256" in page  # (16+1)*12 + (12+1)*4


def test_explorer_inline_loads_bokehjs_once_and_escapes(shell, trained):
    import mlplab.viz.notebook as nb

    model, _, _, x, y = trained
    acts = mlplab.activations(model, x, layers=["dense_1"])
    emb = mlplab.embed(acts["dense_1"], "pca")
    images = np.random.default_rng(1).integers(0, 255, (len(y), 4, 4), dtype=np.uint8)
    view = mlplab.explore({'dense_1 <img src=x onerror="alert(1)">': emb}, y, HOSTILE, images=images,
                          probabilities=mlplab.predict(model, x), title='<script>alert("x")</script>')
    nb._bokehjs_sent = False
    first, second = shown(shell, view)["text/html"], shown(shell, view)["text/html"]
    for page in (first, second):
        checker = check_html(page)
        assert "Bokeh.embed.embed_item(" in "".join(checker.scripts)
        assert page.count("data:image/png;base64,") >= len(y)  # one hover thumbnail per point
    assert len(first) - len(second) > 1_000_000  # BokehJS inlined with the first explorer only
    # the title is markup of ours (escaped); panel names travel inside the Bokeh document's JSON (script_json)
    assert "&lt;script&gt;alert(&quot;x&quot;)" in second and '<script>alert("x")' not in second
    assert '<img src=x onerror="alert(1)">' not in second
    assert "<explorer: 120 points" in repr(view)


@pytest.mark.parametrize("call, message", [
    (lambda y: mlplab.explore(np.zeros((3, 2)), y), "shape (4, 2)"),
    (lambda y: mlplab.explore({}, y), "at least one"),
    (lambda y: mlplab.explore(np.zeros((4, 2)), y.astype(float)), "class indices"),
    (lambda y: mlplab.explore(np.zeros((4, 2)), y, images=np.zeros((3, 2, 2))), "one image per point"),
    (lambda y: mlplab.plot_history([]), "at least one epoch"),
    (lambda y: mlplab.plot_history("curves"), "takes a History"),
])
def test_bad_input_is_one_error_line(call, message):
    with pytest.raises(MlplabError, match=re.escape(message)) as info:
        call(np.array([0, 1, 2, 1]))
    assert "\n" not in str(info.value)


# --- progress -------------------------------------------------------------------------------------------------
class FakeClock:
    """perf_counter that advances 10 ms per call: 400 batches take 'seconds' of fake time, deterministically."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.01
        return self.now


def run_epoch(progress, n_batches: int, epoch: int = 0):
    progress.on_epoch_begin(None, epoch, n_batches)
    for b in range(n_batches):
        progress.on_batch_end(None, b, {"loss_sum": 0.5 * 10 * (b + 1), "correct": 8 * (b + 1), "seen": 10 * (b + 1)})
    progress.on_epoch_end(None, epoch, {"epoch": epoch + 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6,
                                        "val_accuracy": 0.75, "lr": 0.01, "seconds": 1.25})


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_verbose_1_in_a_terminal_redraws_one_line_a_few_times_a_second(monkeypatch):
    monkeypatch.setattr(progress_mod.time, "perf_counter", FakeClock())
    stream = TTY()
    p = progress_mod.Progress(epochs=5, verbose=1, stream=stream, jupyter=False)
    run_epoch(p, 400)
    # 400 batches x 10 ms = 4 s of fake time; one redraw per REFRESH_SECONDS at most
    assert 4 <= p.updates <= 4 / progress_mod.REFRESH_SECONDS + 2
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == p.updates + 1
    assert text.endswith("\rEpoch 1/5 - 1.2s - loss: 0.5000 - accuracy: 0.8000 - val_loss: 0.6000 - "
                         "val_accuracy: 0.7500\x1b[K\n")
    assert "[=====" in text and "/400 - loss: 0.5000 - accuracy: 0.8000" in text


def test_verbose_2_and_pipes_write_one_line_per_epoch():
    for verbose, stream in ((2, TTY()), (1, io.StringIO())):  # a pipe gets no bar, only the lines
        p = progress_mod.Progress(epochs=2, verbose=verbose, stream=stream, jupyter=False)
        run_epoch(p, 50, 0)
        run_epoch(p, 50, 1)
        lines = stream.getvalue().splitlines()
        assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/2", "Epoch 2/2"] and p.updates == 0


def test_verbose_1_in_jupyter_updates_one_output_per_epoch(monkeypatch):
    display_mod = pytest.importorskip("IPython.display")
    shown_outputs = []

    class Handle:
        def __init__(self, bundle):
            self.bundles = [bundle]

        def update(self, bundle, raw=False):
            assert raw
            self.bundles.append(bundle)

    def fake_display(bundle, raw=False, display_id=None):
        handle = Handle(bundle)
        shown_outputs.append(handle)
        return handle

    monkeypatch.setattr(display_mod, "display", fake_display)
    monkeypatch.setattr(progress_mod.time, "perf_counter", FakeClock())
    p = progress_mod.Progress(epochs=3, verbose=1, jupyter=True)
    for epoch in range(3):
        run_epoch(p, 400, epoch)
    assert len(shown_outputs) == 3  # one output per epoch, updated in place
    for epoch, handle in enumerate(shown_outputs, 1):
        assert len(handle.bundles) <= 4 / progress_mod.REFRESH_SECONDS + 3  # throttled: not 400 messages
        final = handle.bundles[-1]
        assert final["text/plain"].startswith(f"Epoch {epoch}/3 - 1.2s - loss: 0.5000")
        assert '<progress value="1.000"' in final["text/html"]


def test_fit_verbose_values(capsys):
    x = np.random.default_rng(0).random((40, 4), dtype=np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    model = mlplab.build("2:softmax", 4, seed=0)
    mlplab.fit(model, x, y, epochs=2, verbose=0)
    mlplab.fit(model, x, y, epochs=1)  # "auto" outside Jupyter: silent, as library code should be
    assert capsys.readouterr().out == ""
    mlplab.fit(model, x, y, epochs=2, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" - ")[0] for line in out] == ["Epoch 4/5", "Epoch 5/5"]  # the run's epochs continue
    with pytest.raises(MlplabError, match=r"verbose must be one of: 'auto', 0, 1, 2 \(got 3\)"):
        mlplab.fit(model, x, y, epochs=1, verbose=3)
    assert model._mlplab_trainer.history.epochs_done == 5  # the bad call changed nothing
