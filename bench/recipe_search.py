"""Test accuracy per epoch of one training recipe on full MNIST (recipe tuning).

    python bench/recipe_search.py SEED LR DECAY SHIFT EPOCHS BATCH [MODEL]

Adam with lr = LR * DECAY**epoch, random SHIFT-pixel shifts (0 = none), one
kernel thread (so that two runs side by side on a 2-core machine do not
oversubscribe). Prints one JSON line: the settings, the test accuracy after
every epoch and the wall time. Results used for the CLI defaults are in
bench/results/recipes.md.
"""

import json
import os
import sys
import time

import fastconv
from fastconv import datasets, models, optim
from fastconv.nn.callbacks import LearningRateScheduler


def main(argv):
    seed, lr, decay = int(argv[0]), float(argv[1]), float(argv[2])
    shift, epochs, batch = int(argv[3]), int(argv[4]), int(argv[5])
    model_name = argv[6] if len(argv) > 6 else "lenet5"
    fastconv.set_num_threads(1)
    data_dir = os.environ.get("FASTCONV_MNIST_DIR",
                              os.path.join(os.path.dirname(__file__), "..", "..", "shared", "mnist"))
    (xtr, ytr), (xte, yte) = datasets.load_mnist(data_dir, download=False)
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
    main(sys.argv[1:])
