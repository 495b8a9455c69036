"""Issue 13: the Recommender facade and grid_search on ML-1M 90/10 (split seed 0); figures in RESULTS.md."""
import os, tempfile, time
import numpy as np
import mfjax as mf
from mfjax.estimator import Recommender
from mfjax.selection import grid_search
r = mf.data.load_movielens("ml-1m", data_dir=os.environ.get("MFJAX_DATA_DIR", "../shared/data"))
train, test = mf.data.split(r, (0.9, 0.1), seed=0)
print("checksum", mf.data.data_checksum(r))
t = time.time(); est = Recommender("als", rank=10).fit(train); print("als fit s", round(time.time()-t, 2), est.test(test))
t = time.time()
res = grid_search(Recommender("als", rank=10), {"l2": [0.02, 0.05, 0.1]}, train, k=3, seed=0, store=os.path.join(tempfile.mkdtemp(), "store"))
print("grid s", round(time.time()-t, 1), res.best_params, round(res.best_score, 4), [round(x.mean["rmse"], 4) for x in res.records])
print("test of selected", res.best_estimator.test(test))
path = os.path.join(tempfile.mkdtemp(), "als.npz")
t = time.time(); est.save(path); e2 = Recommender.load(path); print("save+load s", round(time.time()-t,2))
u = np.asarray(r.row_ids.original[:5]); print(e2.recommend(u, k=5).items.tolist())
