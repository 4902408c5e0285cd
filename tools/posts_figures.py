"""How close a Model A lands to the reference posts' figures.

    python tools/posts_figures.py reference      # or seed_cnn, or any Model A file

Prints JSON: test accuracy (recomputed and as recorded), last-epoch train accuracy,
P(4)/P(9) of the posts' test indices 1270, 1816, 1302 (1302 is a 1 in the real
file), the three most 9-like true 4s, map 120's OIP loss (plain random starts with
seeds 0 and 1, and with the precursor) and how many Conv2D_3 maps get a non-zero
OIP from one random start each (the posts: 61/128) and with the precursor.
The posts: test 0.9944 / 0.9935, train 0.9998, map 120 7.4 -> 327.5.
"""
import json, sys
import numpy as np, torch
from convscope.models import open_model
from convscope.data.catalog import open_dataset
from convscope.inference import to_input
from convscope.app.oip import OIPOptions, run_oips

ref = sys.argv[1]
loaded = open_model(ref); model = loaded.model.eval()
test = open_dataset("mnist").split("test")
with torch.no_grad():
    p = torch.cat([torch.softmax(model(to_input(model, test.images[i:i+2000])), 1) for i in range(0, 10000, 2000)])
pred = p.argmax(1).numpy(); acc = float((pred == test.labels).mean())
out = {"model": ref, "test_accuracy": acc, "json_test_accuracy": model.config.test_accuracy,
       "final_train_accuracy": (model.config.training or {}).get("final_train_accuracy")}
for i in (1270, 1816, 1302):
    out[f"test:{i}"] = {"label": int(test.labels[i]), "P4": round(float(p[i, 4]), 4), "P9": round(float(p[i, 9]), 4), "pred": int(pred[i])}
fours = np.where(test.labels == 4)[0]
amb = fours[np.argsort(-p[fours, 9].numpy())[:3]]
out["most_9_like_4s"] = {int(i): {"P4": round(float(p[i, 4]), 4), "P9": round(float(p[i, 9]), 4)} for i in amb}
clear4 = p[fours, 4].numpy(); out["median_P4_of_true_4s"] = float(np.median(clear4))
for seed in (0, 1):
    r = run_oips(model, [("Conv2D_3", [120])], OIPOptions(precursor=False, seed=seed)).to_json()["layers"]["Conv2D_3"]["per_map"][0]
    out[f"map120_no_precursor_seed{seed}"] = (round(r["initial_loss"], 3), round(r["final_loss"], 3))
r = run_oips(model, [("Conv2D_3", [120])], OIPOptions()).to_json()["layers"]["Conv2D_3"]["per_map"][0]
out["map120_precursor"] = (round(r["initial_loss"], 3), round(r["final_loss"], 3))
allmaps = run_oips(model, [("Conv2D_3", None)], OIPOptions(precursor=False, early_stop=True)).to_json()["layers"]["Conv2D_3"]
out["conv2d3_alive_single_random_start"] = allmaps["non_zero"]
allp = run_oips(model, [("Conv2D_3", None)], OIPOptions(early_stop=True)).to_json()["layers"]["Conv2D_3"]
out["conv2d3_alive_precursor"] = allp["non_zero"]
print(json.dumps(out, indent=1))
