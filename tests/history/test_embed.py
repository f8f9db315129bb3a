"""The int8 ONNX embedder: same vectors however texts are batched, close to the fp32 model."""

from __future__ import annotations

import numpy as np

from core.memory.embed import DIM, _model_dir, _package_dir

TEXTS = [
    "We adopted a beagle called Biscuit last spring",
    "ok",
    "Dinner at the Thai place tonight, the green curry was great",
    "My sister Marta is moving to Lisbon in March for her new job at the hospital",
    "lol",
    "What is my dog's breed?",
    "I signed up for a pottery class on Thursday evenings " * 20,  # cut at MAX_TOKENS
]


def test_unit_vectors_of_the_right_size(embedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), DIM)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert embedder.embed([]).shape == (0, DIM)


def test_batching_and_repeats_barely_move_a_vector(embedder) -> None:
    """int8 activations are scaled per batch, so a text's vector moves a little with the texts
    it is batched with (cosine > 0.98 for a sentence, like the int8 error itself; one-word texts
    move more), and a repeated text gets exactly its first copy's vector."""
    together = embedder.embed(TEXTS + TEXTS[:2])
    for i, text in enumerate(TEXTS):
        [alone] = embedder.embed([text])
        assert float(alone @ together[i]) > (0.98 if len(text.split()) > 3 else 0.93), text
    assert np.array_equal(together[len(TEXTS)], together[0])
    assert np.array_equal(embedder.embed(TEXTS[:1])[0], embedder.embed(TEXTS[:1])[0])
    many = embedder.embed([f"message number {i} about the weekend" for i in range(300)] + TEXTS[:1])
    assert float(many[-1] @ together[0]) > 0.98


def test_close_to_the_fp32_model_and_keeps_meaning(embedder) -> None:
    """int8 costs a little precision (cosine ~0.99 to sentence-transformers' fp32 vectors, a
    little less for one-word texts), not the ranking: each question finds its statement first."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(_model_dir(_package_dir())), device="cpu")
    ours = embedder.embed(TEXTS)
    fp32 = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    cosine = np.sum(ours * fp32, axis=1)
    assert cosine.min() > 0.95 and cosine.mean() > 0.98, cosine
    statements = [0, 2, 3, 6]
    questions = embedder.embed(["Which breed is my dog?", "Where is Marta moving?"])
    scores = questions @ ours[statements].T
    assert statements[scores[0].argmax()] == 0
    assert statements[scores[1].argmax()] == 3
