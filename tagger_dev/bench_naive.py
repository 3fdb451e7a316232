"""The peer a user would write without tagger: one Celery task per photo, boto3 GET,
Pillow, and ``model.predict`` on the Keras model through TensorFlow.

Only ``tagger bench`` runs it (``celery -A tagger_dev.bench_naive worker``), as the baseline the
service is measured against. It is deliberately plain, but not strawman-slow: the model is
built once per worker process, not per photo.
"""

from __future__ import annotations

import io
import os
from typing import Any

import boto3
import numpy as np
import redis
from celery import Celery
from celery.signals import worker_process_init
from PIL import Image

from tagger.config import Settings
from tagger.queueing import make_celery

NAIVE_TASK = "tagger.bench.naive_tag"
NAIVE_QUEUE_SUFFIX = "-naive"
DONE_KEY = "tagger:bench:naive:done"


class _Process:
    """Per-process state of the naive worker (model, clients), made at process start."""

    def __init__(self, settings: Settings) -> None:
        from tagger.model.build import keras_model_for

        self.model = keras_model_for(settings.model.arch)
        self.s3 = boto3.client(
            "s3", endpoint_url=settings.s3.endpoint_url, region_name=settings.s3.region
        )
        self.redis = redis.Redis.from_url(settings.worker.broker_url)


def create_app(settings: Settings) -> Celery:
    app = make_celery(settings, name="tagger-naive")
    queue = settings.worker.queue + NAIVE_QUEUE_SUFFIX
    app.conf.task_default_queue = queue
    app.conf.task_routes = {NAIVE_TASK: {"queue": queue}}
    state: dict[int, _Process] = {}

    def process() -> _Process:
        pid = os.getpid()
        if pid not in state:
            state[pid] = _Process(settings)
        return state[pid]

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _load(**_: Any) -> None:
        process()

    @app.task(name=NAIVE_TASK, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def naive_tag(bucket: str, key: str) -> list[int]:
        proc = process()
        data = proc.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224))
        pixels = (np.asarray(image, np.float32) - 127.0) / 128.0
        probabilities = proc.model.predict(pixels[None], verbose=0)[0][0]
        top5 = [int(i) for i in np.argsort(probabilities)[::-1][:5]]
        proc.redis.incr(DONE_KEY)
        return top5

    return app


app = create_app(Settings())
