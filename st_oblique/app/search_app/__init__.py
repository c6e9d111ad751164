"""``st-oblique app``: a search page over your own images or sentences, with what each of the K tokens matched.

- :mod:`~st_oblique.app.search_app.corpus`: what is searched (a folder of images, a caption table);
- :mod:`~st_oblique.app.search_app.index_cache`: the faiss inner-product indexes, cached next to a manifest;
- :mod:`~st_oblique.app.search_app.engine`: queries, the first-k-token rankings and per-token explanations;
- :mod:`~st_oblique.app.search_app.file_route`: the read-only route to the indexed images;
- :mod:`~st_oblique.app.search_app.ui` and :mod:`~st_oblique.app.search_app.server`: the gradio page and its server
  (gradio, faiss: ``pip install 'st-oblique[app]'``).

Example::

    from st_oblique.app.search_app.corpus import corpus_from_folder
    from st_oblique.app.search_app.engine import open_engine

    engine = open_engine(model, corpus_from_folder("photos"), "photos-index", name="my-model")
    results = engine.search(engine.text_query("a dog on the beach"), num_tokens=16, top_k=5)
"""
