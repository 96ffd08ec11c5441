"""The notebook's story in 30 lines: python examples/quickstart.py [OUT_DIR] (pictures and a page go there)."""

import sys
from pathlib import Path

import mlplab

out = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart-out")
out.mkdir(parents=True, exist_ok=True)

ds = mlplab.load_dataset("fashion-mnist")                        # uint8 images, labels 0-9, class names
model = mlplab.build("512:relu,dropout:0.2,512:relu,dropout:0.2,10:softmax", ds.input_dim, seed=0)
print(mlplab.summary(model))                                     # 669,706 parameters

stop = mlplab.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
history = mlplab.fit(model, ds.x_train, ds.y_train, epochs=20, optimizer="sgd", lr=0.01,
                     validation_split=0.1, callbacks=[stop], verbose=1)
history.plot().savefig(out / "curves.png")                      # loss and accuracy, train vs validation

metrics = mlplab.evaluate(model, ds.x_test, ds.y_test, class_names=ds.class_names)
print(repr(metrics))                                             # accuracy, per-class table

x, y = ds.x_test[:2000], ds.y_test[:2000]
acts = mlplab.activations(model, mlplab.to_features(x), layers=["dense_1", "dense_2"])
maps = {name: mlplab.embed(a, "tsne", seed=0) for name, a in acts.items()}
maps["dense_2 MDS"] = mlplab.embed(acts["dense_2"], "mds", seed=0)
mlplab.plot_embedding(maps, y, ds.class_names).savefig(out / "embeddings.png")
proba = mlplab.predict(model, mlplab.to_features(x))
view = mlplab.explore(maps, y, ds.class_names, images=x, probabilities=proba)
(out / "explorer.html").write_text(view.page(), encoding="utf-8")  # offline, hover thumbnails
print(f"wrote {out}/curves.png, embeddings.png, explorer.html")
