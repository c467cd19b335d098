"""How good is the pretrained representation on its own? A linear probe: scikit-learn's LogisticRegression on
the frozen encoder's features of the 100 labeled train images, scored on the val images and the 10k test."""
from __future__ import annotations

from ex08_autoencoder.data import FewLabelData
from ex08_autoencoder.models import encode


def linear_probe(encoder, data: FewLabelData) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(encode(encoder, data.train_x).cpu().numpy())

    def features(x):
        return scaler.transform(encode(encoder, x).cpu().numpy())

    probe = LogisticRegression(max_iter=2000, C=1.0).fit(features(data.train_x), data.train_y.cpu().numpy())
    return {"val/probe_acc": float(probe.score(features(data.val_x), data.val_y.cpu().numpy())),
            "test10k/probe_acc": float(probe.score(features(data.test10k_x), data.test10k_y.cpu().numpy()))}
