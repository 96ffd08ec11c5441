"""TensorBoard logging: a training callback (Keras's `TensorBoard` in mlplab's terms) and the export of
finished runs (`mlplab tensorboard RUN...`).

Both write one TensorBoard run per training run with torch's SummaryWriter (no TensorFlow): per-epoch
scalars under history.csv's column names, weight/bias/activation histograms per dense layer, the HParams
plugin's experiment, the model summary as text, and the Embedding Projector files (tensors, metadata.tsv
with label and prediction, sprite.png, projector_config.pbtxt) for hidden layers of a seeded sample.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError
from mlplab.train.callbacks import Callback

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mlplab[tensorboard]'"
# scalar tags: history.csv's columns, so a chart's name is the column a user already knows
SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
# the sprite is one square PNG; the projector reads at most 8192x8192 pixels of it
MAX_SPRITE_SIDE = 8192


def _after_existing_event_files(log_dir: Path) -> None:
    """Wait (at most a second) until a new event file's name sorts after the folder's existing ones.

    TensorBoard reads a run's event files in name order, and the name starts with the creation time in whole
    seconds, then the host and the process id. A resume that starts within the same second as the process it
    continues (a script resuming a killed run) could otherwise get a name that sorts first: its purge of the
    re-trained epochs would then come before the events it purges, and the charts would show them twice."""
    stamps = []
    for path in log_dir.glob("events.out.tfevents.*"):
        with contextlib.suppress(ValueError, IndexError):
            stamps.append(int(path.name.split(".")[3]))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if 0 < wait <= 1.5:
            time.sleep(wait)


def summary_writer(log_dir, **kwargs):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MlplabError(f"TensorBoard logging needs the tensorboard package: {INSTALL_HINT}") from None
    try:
        return SummaryWriter(str(log_dir), **kwargs)
    except OSError as exc:
        raise MlplabError(f"cannot write TensorBoard logs to {log_dir}: {exc.strerror or exc}") from exc


def sample_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """A seeded sample, sorted (so the projector's point order follows the data's)."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def _hparam_value(v):
    # the HParams plugin takes numbers, strings and booleans only
    if isinstance(v, (bool, int, float, str)):
        return v
    return "none" if v is None else str(v)


def write_scalars(writer, row: dict, step: int) -> None:
    for tag in SCALARS:
        value = row.get(tag)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            writer.add_scalar(tag, float(value), step)


def write_hparams(writer, hparams: dict) -> None:
    """The HParams plugin's experiment, in this run: its metrics are the per-epoch scalars written here."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    clean = {k: _hparam_value(v) for k, v in hparams.items()}
    metrics = {tag: 0.0 for tag in ("loss", "accuracy", "val_loss", "val_accuracy")}
    file_writer = writer._get_file_writer()  # add_hparams would open a second run folder; we want this one
    for summary in hparams_summary(clean, metrics):
        file_writer.add_summary(summary)


def write_summary_text(writer, text: str) -> None:
    # indented 4 spaces: TensorBoard renders text as Markdown, and a code block keeps the table's columns
    writer.add_text("model/summary", "\n".join("    " + line for line in text.splitlines()), 0)


def write_histograms(writer, model, step: int, x=None) -> None:
    """Weights and biases of each dense layer, and its activations for inputs `x` (N, D) when given."""
    from mlplab.inspect import activations

    for name, layer in model.dense_layers():
        writer.add_histogram(f"{name}/kernel", layer.weight.detach().cpu().numpy(), step)
        if layer.bias is not None:
            writer.add_histogram(f"{name}/bias", layer.bias.detach().cpu().numpy(), step)
    if x is not None and len(x):
        for name, values in activations(model, x, "all").items():
            writer.add_histogram(f"{name}/activations", values, step)


def write_projector(writer, model, images, labels, class_names, step: int, layers="all") -> list[str]:
    """One projector embedding per layer: activations of `images`, labelled with class and prediction,
    with a sprite of the images when they are pictures. Returns the embedding tags written."""
    import torch

    from mlplab.data import to_features
    from mlplab.inspect import activations, resolve_layers
    from mlplab.train.predict import predict

    x = to_features(images)
    names = [str(n) for n in class_names]
    name_of = lambda i: names[i] if 0 <= i < len(names) else str(i)  # noqa: E731
    predicted = predict(model, x).argmax(axis=1)
    metadata = [[name_of(int(y)), name_of(int(p))] for y, p in zip(labels, predicted)]
    sprite = _sprite_images(images)
    tags = []
    for name, values in activations(model, x, resolve_layers(model, layers)).items():
        stale = Path(writer.log_dir) / f"{step:05d}" / name
        if stale.is_dir() and not stale.is_symlink():
            # this epoch's embedding again (a resumed run trains again the epochs past its last checkpoint):
            # the new files replace the old ones (SummaryWriter would print a warning and write over them)
            shutil.rmtree(stale)
        config = getattr(writer, "_projector_config", None)  # and its entry in the projector's config
        if config is not None and any(e.tensor_path.startswith(f"{step:05d}/{name}/") for e in config.embeddings):
            kept = [e for e in config.embeddings if not e.tensor_path.startswith(f"{step:05d}/{name}/")]
            del config.embeddings[:]
            config.embeddings.extend(kept)
        writer.add_embedding(torch.from_numpy(np.ascontiguousarray(values)), metadata=metadata,
                             label_img=sprite, global_step=step, tag=name, metadata_header=["label", "prediction"])
        tags.append(name)
    return tags


def _sprite_images(images) -> "torch.Tensor | None":
    """(N, 1, H, W) float in [0, 1] for the sprite, or None when the samples are not square pictures."""
    import torch

    a = np.asarray(images)
    if a.ndim == 2:
        side = math.isqrt(a.shape[1])
        if side * side != a.shape[1]:
            return None  # tabular features: no picture to show
        a = a.reshape(len(a), side, side)
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4):
        a = a[..., :3].mean(axis=-1)
    elif a.ndim != 3:
        return None
    if math.ceil(math.sqrt(len(a))) * max(a.shape[1:]) > MAX_SPRITE_SIDE:
        return None
    a = a.astype(np.float32)
    top = 255.0 if float(np.nanmax(a, initial=0.0)) > 1.0 else 1.0
    a = np.clip(np.nan_to_num(a) / top, 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(a[:, None]))  # (N, 1, H, W)


class TensorBoard(Callback):
    """Log a fit to TensorBoard, as keras.callbacks.TensorBoard does.

    Every epoch: the history's scalars (loss, accuracy, val_loss, val_accuracy, lr, seconds; step = epoch,
    1-based as in history.csv). Every `histogram_freq` epochs (0: never): weight, bias and activation
    histograms per dense layer. Once: the model summary as text and the hyper-parameters (HParams plugin),
    and the scalars of the epochs trained before, when the model was trained without this log (a resumed run).
    At the end of training, and every `embeddings_freq` epochs when > 0: the Embedding Projector for
    `embeddings_layers` on a seeded sample of `embeddings_data` = (images or features, labels).
    """

    def __init__(self, log_dir, *, histogram_freq: int = 1, embeddings_freq: int = 0, embeddings_data=None,
                 embeddings_layers="all", embeddings_n: int = 1000, class_names=None, hparams: dict | None = None,
                 seed: int = 0):
        from mlplab.runs.mlflow_logger import installed

        if not installed("tensorboard"):  # said before training, not after it
            raise MlplabError(f"TensorBoard logging needs the tensorboard package: {INSTALL_HINT}")
        for name, value in (("histogram_freq", histogram_freq), ("embeddings_freq", embeddings_freq)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MlplabError(f"TensorBoard {name} must be an integer >= 0 (got {value!r})")
        if not isinstance(embeddings_n, int) or embeddings_n < 1:
            raise MlplabError(f"TensorBoard embeddings_n must be an integer >= 1 (got {embeddings_n!r})")
        self.log_dir = Path(log_dir)
        self.histogram_freq = histogram_freq
        self.embeddings_freq = embeddings_freq
        self.embeddings_layers = embeddings_layers
        self.hparams = hparams
        self.writer = None
        self.images = self.labels = self.x = None
        if embeddings_data is not None:
            images, labels = embeddings_data
            idx = sample_indices(len(labels), embeddings_n, seed)
            self.images, self.labels = np.asarray(images)[idx], np.asarray(labels)[idx]
            if self.labels.ndim == 2:  # one-hot
                self.labels = self.labels.argmax(axis=1)
            from mlplab.data import to_features

            self.x = to_features(self.images)
        self.class_names = list(class_names) if class_names is not None else None
        self.projector_tags: list[str] = []

    def on_train_begin(self, trainer) -> None:
        from mlplab.model import summary

        done = trainer.history.epochs_done
        # once per TensorBoard run: a resumed run that logged before has them, one logged from now on does not
        first = done == 0 or not any(self.log_dir.glob("events.out.tfevents.*"))
        # a resumed run may have logged epochs past its last checkpoint before it stopped: TensorBoard drops
        # those steps from the older event files (purge_step) instead of drawing them twice
        if done:
            _after_existing_event_files(self.log_dir)
        self.writer = summary_writer(self.log_dir, purge_step=done + 1 if done else None)
        if done:
            _keep_projector_embeddings(self.writer, self.log_dir, done)
        if first:
            write_summary_text(self.writer, summary(trainer.model))
            write_hparams(self.writer, self.hparams if self.hparams is not None else _trainer_hparams(trainer))
            for row in trainer.history.rows:  # a run logged from its resume on: the epochs before, from its history
                write_scalars(self.writer, row, int(row["epoch"]))
        self.writer.flush()

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        step = epoch + 1
        write_scalars(self.writer, logs, step)
        if self.histogram_freq and step % self.histogram_freq == 0:
            write_histograms(self.writer, trainer.model, step, self.x)
        if self.embeddings_freq and step % self.embeddings_freq == 0:
            self._projector(trainer, step)
        self.writer.flush()  # a TensorBoard watching the folder shows the epoch now, not at the end

    def on_train_end(self, trainer) -> None:
        step = trainer.history.epochs_done
        if self.histogram_freq and step % self.histogram_freq != 0:
            write_histograms(self.writer, trainer.model, step, self.x)  # the final weights, always
        if not (self.embeddings_freq and step % self.embeddings_freq == 0):
            self._projector(trainer, step)
        self._close()

    def on_interrupt(self, trainer) -> None:
        self._close()

    def on_run_failed(self, trainer) -> None:
        """The run session's step when training stopped on an error: what was logged stays."""
        self._close()

    def _projector(self, trainer, step: int) -> None:
        if self.images is None:
            return
        n_out = trainer.model.n_outputs
        names = self.class_names or [str(i) for i in range(n_out)]
        self.projector_tags = write_projector(self.writer, trainer.model, self.images, self.labels, names, step,
                                              self.embeddings_layers)

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _keep_projector_embeddings(writer, log_dir: Path, done: int) -> None:
    """A resumed run's writer starts the projector's config again (SummaryWriter rewrites the whole
    projector_config.pbtxt with the embeddings it added itself): it keeps those of the epochs before the
    resume, so the projector lists every epoch's embeddings, not only those after it."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    path = Path(log_dir) / "projector_config.pbtxt"
    try:
        old = text_format.Parse(path.read_text(encoding="utf-8"), ProjectorConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError):
        return  # none yet (or not ours): the resumed run's embeddings alone
    keep = ProjectorConfig()
    for embedding in old.embeddings:
        folder = embedding.tensor_path.split("/", 1)[0]
        # epochs past the last checkpoint were trained again: their folders are about to be rewritten
        if folder.isdigit() and int(folder) <= done and (Path(log_dir) / embedding.tensor_path).is_file():
            keep.embeddings.append(embedding)
    if keep.embeddings:
        writer._projector_config = keep  # what add_embedding appends to (torch.utils.tensorboard.writer)


def _trainer_hparams(trainer) -> dict:
    """What a plain fit() knows about its settings (a run session passes its full options instead)."""
    return {"optimizer": type(trainer.optimizer).__name__.lower(), "lr": trainer.lr, "batch_size": trainer.batch_size,
            "loss": trainer.loss, "seed": trainer.seed, "schedule": trainer.schedule_name}


def run_hparams(train_options: dict, spec: str, data: str) -> dict:
    """A run's hyper-parameters for the HParams plugin: its recorded options, the spec and the data."""
    out = {"data": data, "model": spec}
    out.update({k: v for k, v in train_options.items() if k not in ("device", "threads")})
    return out


def export_run(run, log_dir, *, n: int = 1000, layers="all") -> Path:
    """Write a finished run folder as a TensorBoard run under log_dir/<run name>: history.csv's scalars, the
    final weights' histograms, hyper-parameters, summary text and the projector on a test-split sample."""
    rows = run.history()
    if not rows:
        raise MlplabError(f"run {run.path} has no history.csv yet; train it first")
    target = Path(log_dir) / run.name
    if target.exists() and any(target.iterdir()):
        raise MlplabError(f"{target} already holds TensorBoard logs; choose another --out or remove it")
    model = run.model()
    writer = summary_writer(target)
    try:
        text = run.summary_text()
        if text:
            write_summary_text(writer, text)
        write_hparams(writer, run_hparams(run.config["train"], run.config["model"]["spec"], run.config["data"]["name"]))
        for row in rows:
            write_scalars(writer, row, int(row["epoch"]))
        step = int(rows[-1]["epoch"])
        test = run.split("test")
        idx = sample_indices(len(test.y), n, int(run.config["train"].get("seed", 0)))
        write_histograms(writer, model, step, test.x[idx])
        write_projector(writer, model, test.images[idx], test.y[idx], run.class_names, step, layers)
    finally:
        writer.close()
    return target
