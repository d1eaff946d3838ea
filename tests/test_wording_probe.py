import pytest
import torch

from dfworld.bench.wording_probe import WordingProbe, fit_probe, training_corpus
from dfworld.model.conditioning import VocabEncoder
from dfworld.world.events import EVENT_KINDS, training_wordings


def test_the_probe_is_a_balanced_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model", reason="scikit-learn comes with the `text` extra")
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 30 + [1] * 10 + [2] * 5)
    x = torch.nn.functional.normalize(torch.randn(45, 6, generator=g, dtype=torch.float64) + 1.5 * torch.eye(3, 6, dtype=torch.float64)[y], dim=-1)
    w, b = fit_probe(x, y, 3, c=2.0)
    ref = sklearn.LogisticRegression(C=2.0, class_weight="balanced", tol=1e-10, max_iter=10000).fit(x.numpy(), y.numpy())
    assert abs(torch.softmax(x @ w.T + b, -1).numpy() - ref.predict_proba(x.numpy())).max() < 1e-4
    with pytest.raises(ValueError, match=r"no training text for class\(es\) \[2\]"):
        fit_probe(x[:40], y[:40], 3, c=1.0)
    with pytest.raises(ValueError, match="must be > 0"):
        fit_probe(x, y, 3, c=0.0)


def test_the_probe_reads_training_wordings_and_reports_out_of_template_accuracy():
    texts, kinds, groups = training_corpus()
    assert len(set(groups)) == sum(len(training_wordings(k)) for k in EVENT_KINDS)
    assert {EVENT_KINDS[k] for k in kinds} == set(EVENT_KINDS)
    enc = VocabEncoder(dim=32)
    probe, out_of_template = WordingProbe.fit(enc.encode, c=3.0, progress=False)
    p = probe.probs(enc.encode(["night falls", "it starts to snow", "the red object vanishes"]))
    assert torch.allclose(p.sum(1), torch.ones(3, dtype=p.dtype))
    assert [EVENT_KINDS[j] for j in p.argmax(1)] == ["time_night", "weather_snow", "object_vanish"]
    # unseen templates are harder than the fitted ones, but far above chance (1/9)
    assert 0.3 < out_of_template < 1.0
