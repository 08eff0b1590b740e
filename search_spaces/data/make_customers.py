"""Writes customers.csv, the example data of csv_example.yaml: run once, committed with its output.

A made-up churn table (not real customers): scikit-learn's make_classification (seed 2026) gives six numeric
columns and the binary target; a plan tier and a region are derived from, and mixed into, the signal; a few
tenures are blanked so that the example shows imputation. Labels are the strings "no" / "yes".
"""

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

SEED = 2026
x, y = make_classification(
    n_samples=800, n_features=6, n_informative=4, n_redundant=1, flip_y=0.08, class_sep=0.8, random_state=SEED
)
rng = np.random.default_rng(SEED)
frame = pd.DataFrame(
    {
        "monthly_spend": np.round(60 + 15 * x[:, 0], 2),
        "support_calls": np.clip(np.round(3 + 1.5 * x[:, 1]), 0, None).astype(int),
        "tenure_months": np.clip(np.round(24 - 8 * x[:, 2]), 1, None),
        "discount": np.round(0.1 + 0.05 * x[:, 3], 3),
        "usage_hours": np.round(40 + 10 * x[:, 4], 1),
        "age": np.clip(np.round(45 + 12 * x[:, 5]), 18, 90).astype(int),
        "plan": pd.cut(
            x[:, 0] + rng.normal(0, 0.7, len(x)), [-np.inf, -0.5, 0.8, np.inf], labels=["basic", "plus", "pro"]
        ),
        "region": rng.choice(["north", "south", "east", "west"], len(x), p=[0.4, 0.3, 0.2, 0.1]),
        "newsletter": rng.random(len(x)) < 0.35 + 0.2 * y,
        "churned": np.where(y == 1, "yes", "no"),
    }
)
frame.loc[rng.choice(len(frame), 24, replace=False), "tenure_months"] = np.nan
frame.to_csv(Path(__file__).with_name("customers.csv"), index=False)
