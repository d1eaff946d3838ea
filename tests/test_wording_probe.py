import pytest
import torch

from dfworld.bench.wording_probe import WordingReader, fit_centroids, fit_probe, training_corpus
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


def test_the_centroids_weigh_every_template_once():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    g = torch.tensor([0, 0, 0, 1, 2, 3])  # template 0 has three fillings, template 1 one
    c = fit_centroids(x, y, g, 2)
    assert torch.allclose(c[0], torch.nn.functional.normalize(torch.tensor([0.5, 0.5], dtype=torch.float64), dim=0))
    assert torch.allclose(c[1], torch.nn.functional.normalize(torch.tensor([0.5, 1.0], dtype=torch.float64), dim=0))
    with pytest.raises(ValueError, match="no training text for class 2"):
        fit_centroids(x, y, g, 3)


@pytest.mark.parametrize("method", ["probe", "centroid"])
def test_the_readers_read_training_wordings_and_report_out_of_template_accuracy(method):
    texts, kinds, groups = training_corpus()
    assert len(set(groups)) == sum(len(training_wordings(k)) for k in EVENT_KINDS)
    assert {EVENT_KINDS[k] for k in kinds} == set(EVENT_KINDS)
    enc = VocabEncoder(dim=32)
    reader, out_of_template = WordingReader.fit(enc.encode, method, c=3.0, progress=False)
    s = reader.scores(enc.encode(["night falls", "it starts to snow", "the red object vanishes"]))
    assert s.shape == (3, len(EVENT_KINDS))
    if method == "probe":
        assert torch.allclose(s.sum(1), torch.ones(3, dtype=s.dtype))
    else:
        assert (s.abs() <= 1 + 1e-9).all()
    # the fitted reader reads its own training texts (a sample of them) mostly right
    sample = list(range(0, len(texts), 7))
    read = reader.kinds(enc.encode([texts[i] for i in sample]))
    fitted = sum(r == EVENT_KINDS[kinds[i]] for r, i in zip(read, sample)) / len(sample)
    assert fitted > 0.7 and fitted >= out_of_template - 0.05
    if method == "probe":
        assert reader.kinds(enc.encode(["night falls", "it starts to snow", "the red object vanishes"])) == [
            "time_night", "weather_snow", "object_vanish"]
    # unseen templates are harder than the fitted ones, but far above chance (1/9)
    assert 0.3 < out_of_template < 1.0


def test_an_unknown_reader_is_refused():
    with pytest.raises(ValueError, match="unknown wording reader 'knn'"):
        WordingReader.fit(VocabEncoder(dim=8).encode, "knn", progress=False)
