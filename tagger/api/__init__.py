"""``tagger serve``: the HTTP API (``/v1``) and the gallery (``/``), faces over
:class:`~tagger.client.TaggerClient` and the store with no tagging logic of their own."""
