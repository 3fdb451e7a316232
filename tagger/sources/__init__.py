"""Read a photo's bytes from its reference, bounded in size and time, failing only with typed
errors whose reasons are safe to store.

One module per scheme behind the small :class:`Source` protocol (``base``): ``s3`` (boto3),
``http`` (https, and http when allowed; SSRF rules in ``urlsafety``) and ``file`` (local
paths); ``body`` bounds every read; ``registry`` maps schemes to sources and holds the
:class:`Fetcher` the pipeline uses. A worker fetches from many threads at once, so a Fetcher
holds exactly one boto3 client and one urllib3 pool manager, both thread-safe.
"""

from tagger.sources.base import Fetched, Source, SourceFactory, clean_etag
from tagger.sources.registry import SOURCES, Fetcher
from tagger.sources.s3 import make_s3_client
from tagger.sources.urlsafety import is_public_address, redact_url

__all__ = [
    "SOURCES",
    "Fetched",
    "Fetcher",
    "Source",
    "SourceFactory",
    "clean_etag",
    "is_public_address",
    "make_s3_client",
    "redact_url",
]
