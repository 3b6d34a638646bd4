"""Test accuracy per epoch of one training recipe on full MNIST (recipe tuning).

    python bench/recipe_search.py SEED LR DECAY SHIFT EPOCHS BATCH [MODEL] [--data-dir DIR]

Adam with lr = LR * DECAY**epoch, random SHIFT-pixel shifts (0 = none), one
kernel thread (so that two runs side by side on a 2-core machine do not
oversubscribe). Prints one JSON line: the settings, the test accuracy after
every epoch and the wall time. Results used for the CLI defaults are in
bench/results/recipes.md.
"""

import argparse
import json
import time

import fastconv
from fastconv import datasets, models, optim
from fastconv.nn.callbacks import LearningRateScheduler
from harness import add_data_dir_option


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, kind in (("seed", int), ("lr", float), ("decay", float), ("shift", int),
                       ("epochs", int), ("batch", int)):
        p.add_argument(name, type=kind, metavar=name.upper())
    p.add_argument("model", nargs="?", default="lenet5")
    add_data_dir_option(p)
    args = p.parse_args(argv)
    seed, lr, decay, shift = args.seed, args.lr, args.decay, args.shift
    epochs, batch, model_name = args.epochs, args.batch, args.model
    fastconv.set_num_threads(1)
    (xtr, ytr), (xte, yte) = datasets.load_mnist(args.data_dir, download=False)
    model = getattr(models, model_name)(seed=seed)
    model.compile(optimizer=optim.Adam(model.parameters(), lr=lr), loss="cross_entropy",
                  metrics=["accuracy"])
    t0 = time.time()
    hist = model.fit(xtr, ytr, batch_size=batch, epochs=epochs, validation_data=(xte, yte),
                     verbose=0, seed=seed, augment=datasets.RandomShift(shift) if shift else None,
                     callbacks=[LearningRateScheduler(lambda e: lr * decay ** e)])
    print(json.dumps({"model": model_name, "seed": seed, "lr": lr, "decay": decay, "shift": shift,
                      "epochs": epochs, "batch": batch,
                      "test_accuracy_per_epoch": [round(a, 4) for a in hist.history["val_accuracy"]],
                      "wall_seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
